//! A restricted pickle reader: it builds a tree of plain values from the
//! opcodes `torch.save` writes (protocol 2) and never runs code. A `GLOBAL`
//! becomes a name, a `REDUCE` a call node; nothing is imported or called.
//!
//! Every read is bounded by the bytes left in the stream (a length field
//! cannot allocate more than the file holds), and memoised values are shared,
//! not copied, so a small file cannot grow into a large tree.

use std::cell::RefCell;
use std::io::BufRead;
use std::rc::Rc;

/// A pickled value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float or a byte string: read past, contents not kept (a state dict
    /// needs neither).
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// `module.name`, as `GLOBAL` names it.
    Global(Rc<str>, Rc<str>),
    /// `callable(*args)`, not called.
    Call(Rc<Value>, Rc<Value>),
    /// An object `BUILD` would restore from a state, not restored.
    Built,
    /// What `persistent_load(id)` would return: the id.
    Persistent(Rc<Value>),
    /// The stack marker of `MARK`.
    Mark,
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global(m, n) if &**m == module && &**n == name)
    }
}

/// Why a pickle could not be read.
pub(crate) type PickleError = String;

/// Bytes of the stream left: every length read is checked against it.
pub(crate) struct Budget {
    pub(crate) left: u64,
}

impl Budget {
    fn take(&mut self, n: u64, what: &str) -> Result<(), PickleError> {
        if n > self.left {
            return Err(format!("{what} of {n} bytes runs past the end of the file"));
        }
        self.left -= n;
        Ok(())
    }
}

pub(crate) fn read_exact<R: BufRead>(
    r: &mut R,
    budget: &mut Budget,
    n: u64,
    what: &str,
) -> Result<Vec<u8>, PickleError> {
    budget.take(n, what)?;
    let mut data = vec![0u8; n as usize];
    r.read_exact(&mut data).map_err(|e| format!("{what}: {e}"))?;
    Ok(data)
}

pub(crate) fn read_array<const N: usize, R: BufRead>(
    r: &mut R,
    budget: &mut Budget,
    what: &str,
) -> Result<[u8; N], PickleError> {
    budget.take(N as u64, what)?;
    let mut data = [0u8; N];
    r.read_exact(&mut data).map_err(|e| format!("{what}: {e}"))?;
    Ok(data)
}

fn read_line<R: BufRead>(r: &mut R, budget: &mut Budget) -> Result<String, PickleError> {
    let mut line = Vec::new();
    // A name is short; a line without an end within 256 bytes is not one.
    let read = std::io::Read::take(&mut *r, 256.min(budget.left))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("GLOBAL: {e}"))?;
    budget.take(read as u64, "GLOBAL")?;
    if line.pop() != Some(b'\n') {
        return Err("GLOBAL: a name without a line end".into());
    }
    String::from_utf8(line).map_err(|_| "GLOBAL: a name that is not UTF-8".into())
}

/// Reads one pickle (up to its `STOP`) from `r`.
pub(crate) fn read_pickle<R: BufRead>(r: &mut R, budget: &mut Budget) -> Result<Value, PickleError> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| PickleError::from("pop from an empty stack"));
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, PickleError> {
        let mark = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| PickleError::from("no MARK on the stack"))?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let [op] = read_array::<1, _>(r, budget, "opcode")?;
        match op {
            0x80 => {
                let [version] = read_array::<1, _>(r, budget, "PROTO")?;
                if version > 5 {
                    return Err(format!("pickle protocol {version} is not known"));
                }
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(read_array::<1, _>(r, budget, "BININT1")?[0] as i64)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(read_array(r, budget, "BININT2")?) as i64)),
            b'J' => stack.push(Value::Int(i32::from_le_bytes(read_array(r, budget, "BININT")?) as i64)),
            0x8a => {
                let [n] = read_array::<1, _>(r, budget, "LONG1")?;
                let bytes = read_exact(r, budget, n as u64, "LONG1")?;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes does not fit 64 bits"));
                }
                let mut value = 0i64;
                for (i, byte) in bytes.iter().enumerate() {
                    value |= (*byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n as usize - 1] & 0x80 != 0 {
                    value -= 1i64 << (8 * n as u32);
                }
                stack.push(Value::Int(value));
            }
            b'G' => {
                read_array::<8, _>(r, budget, "BINFLOAT")?;
                stack.push(Value::Float);
            }
            b'X' | 0x8c | b'T' | b'U' | b'B' | b'C' => {
                let len = match op {
                    b'X' | b'T' | b'B' => u32::from_le_bytes(read_array(r, budget, "string length")?) as u64,
                    _ => read_array::<1, _>(r, budget, "string length")?[0] as u64,
                };
                let data = read_exact(r, budget, len, "string")?;
                stack.push(match op {
                    b'X' | 0x8c => Value::Str(
                        String::from_utf8(data)
                            .map_err(|_| "a string that is not UTF-8")?
                            .into(),
                    ),
                    _ => Value::Bytes,
                });
            }
            b')' => stack.push(Value::Tuple(Rc::new(Vec::new()))),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(Rc::new(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("TUPLE of more items than the stack holds".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(Rc::new(items)));
            }
            b']' => stack.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last() {
                    Some(Value::List(list)) => list.borrow_mut().extend(items),
                    _ => return Err("APPEND to something that is not a list".into()),
                }
            }
            b'}' => stack.push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
            b'd' | b's' | b'u' => {
                let items = match op {
                    b's' => {
                        let value = pop(&mut stack)?;
                        vec![pop(&mut stack)?, value]
                    }
                    _ => pop_mark(&mut stack)?,
                };
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let pairs = items.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone()));
                if op == b'd' {
                    stack.push(Value::Dict(Rc::new(RefCell::new(pairs.collect()))));
                } else {
                    match stack.last() {
                        Some(Value::Dict(dict)) => dict.borrow_mut().extend(pairs),
                        _ => return Err("SETITEM on something that is not a dict".into()),
                    }
                }
            }
            b'c' => {
                let module = read_line(r, budget)?;
                let name = read_line(r, budget)?;
                stack.push(Value::Global(module.into(), name.into()));
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let ordered_dict = callable.is_global("collections", "OrderedDict");
                stack.push(if ordered_dict {
                    Value::Dict(Rc::new(RefCell::new(Vec::new())))
                } else {
                    Value::Call(Rc::new(callable), Rc::new(args))
                });
            }
            b'b' => {
                pop(&mut stack)?;
                let object = pop(&mut stack)?;
                // A dict's state (an OrderedDict's `_metadata`) changes no item.
                stack.push(match object {
                    Value::Dict(_) => object,
                    _ => Value::Built,
                });
            }
            b'Q' => {
                let id = pop(&mut stack)?;
                stack.push(Value::Persistent(Rc::new(id)));
            }
            b'q' | b'r' => {
                let index = if op == b'q' {
                    read_array::<1, _>(r, budget, "BINPUT")?[0] as usize
                } else {
                    u32::from_le_bytes(read_array(r, budget, "LONG_BINPUT")?) as usize
                };
                let top = stack.last().cloned().ok_or("BINPUT with an empty stack")?;
                if index > memo.len() + 1024 {
                    return Err(format!("memo index {index} far past the {} stored", memo.len()));
                }
                if memo.len() <= index {
                    memo.resize(index + 1, None);
                }
                memo[index] = Some(top);
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    read_array::<1, _>(r, budget, "BINGET")?[0] as usize
                } else {
                    u32::from_le_bytes(read_array(r, budget, "LONG_BINGET")?) as usize
                };
                let value = memo
                    .get(index)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("memo index {index} was never stored"))?;
                stack.push(value);
            }
            other => return Err(format!("pickle opcode 0x{other:02x} is not allowed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Value, PickleError> {
        let mut budget = Budget {
            left: bytes.len() as u64,
        };
        read_pickle(&mut &bytes[..], &mut budget)
    }

    #[test]
    fn reads_values_and_refuses_the_rest() {
        // pickle.dumps({'a': (1, -2, 300)}, protocol=2)
        let bytes = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01J\xfe\xff\xff\xffM,\x01\x87q\x02s.";
        let Value::Dict(dict) = read(bytes).expect("dict") else {
            panic!("not a dict")
        };
        let dict = dict.borrow();
        assert_eq!(dict[0].0.as_str(), Some("a"));
        let Value::Tuple(items) = &dict[0].1 else {
            panic!("not a tuple")
        };
        let ints: Vec<i64> = items.iter().filter_map(Value::as_int).collect();
        assert_eq!(ints, [1, -2, 300]);
        // The legacy magic number does not fit 64 bits: refused, not a panic.
        let magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";
        assert!(read(magic).unwrap_err().contains("64 bits"));
        // A string longer than the file, an unknown opcode, a missing STOP.
        assert!(read(b"\x80\x02X\xff\xff\xff\x7fabc.")
            .unwrap_err()
            .contains("past the end"));
        assert!(read(b"\x80\x02\x93.").unwrap_err().contains("not allowed"));
        assert!(read(b"\x80\x02K\x01").is_err());
        assert!(read(b"\x80\x02h\x05.").unwrap_err().contains("never stored"));
    }
}
