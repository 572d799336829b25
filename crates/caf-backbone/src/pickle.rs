//! A restricted pickle reader: it builds a tree of plain values from the
//! opcodes `torch.save` writes (protocol 2) and never runs code. A `GLOBAL`
//! becomes a name, a `REDUCE` a call node; nothing is imported or called.
//!
//! Every read is bounded by the bytes left in the stream (a length field
//! cannot allocate more than the file holds), and memoised values are shared,
//! not copied, so a small file cannot grow into a large tree.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::BufRead;
use std::rc::Rc;

/// How deeply values may nest. A state dict nests five deep (dict, call,
/// tuple of arguments, persistent id, tuple); a checkpoint a few more. The
/// bound keeps every walk over a value, and dropping one, off the stack's
/// limits.
pub(crate) const MAX_DEPTH: usize = 64;

/// A pickled value. Containers record how deeply they nest.
#[derive(Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float or a byte string: read past, contents not kept (a state dict
    /// needs neither).
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<Value>>, usize),
    List(Rc<Open<Vec<Value>>>),
    Dict(Rc<Open<Vec<(Value, Value)>>>),
    /// `module.name`, as `GLOBAL` names it.
    Global(Rc<str>, Rc<str>),
    /// `callable(*args)`, not called.
    Call(Rc<(Value, Value)>, usize),
    /// An object `BUILD` would restore from a state, not restored.
    Built,
    /// What `persistent_load(id)` would return: the id.
    Persistent(Rc<Value>, usize),
    /// The stack marker of `MARK`.
    Mark,
}

/// A list or dict, which `APPEND` and `SETITEM` fill after it is made.
///
/// It is open while it stands alone on the stack or in the memo, and sealed
/// for good once placed inside another value. Only an open container takes
/// items, so no value can come to contain itself: a container inside `x`
/// was sealed when it was placed there, and a sealed one takes nothing.
/// Its depth is then exact, since nothing that holds it records a depth yet.
pub(crate) struct Open<T> {
    items: RefCell<T>,
    depth: Cell<usize>,
    sealed: Cell<bool>,
}

impl<T> Open<T> {
    fn new(items: T, depth: usize) -> Rc<Self> {
        Rc::new(Open {
            items: RefCell::new(items),
            depth: Cell::new(depth),
            sealed: Cell::new(false),
        })
    }

    pub(crate) fn items(&self) -> std::cell::Ref<'_, T> {
        self.items.borrow()
    }
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

    /// Levels of containers in this value (0 for a scalar).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(_, depth) | Value::Call(_, depth) | Value::Persistent(_, depth) => *depth,
            Value::List(list) => list.depth.get(),
            Value::Dict(dict) => dict.depth.get(),
            _ => 0,
        }
    }

    /// What kind of value this is, for messages: a value is never printed
    /// whole (shared parts would print once per reference).
    pub(crate) fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("{b}"),
            Value::Int(i) => format!("{i}"),
            Value::Float => "a float".into(),
            Value::Str(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
            Value::Bytes => "bytes".into(),
            Value::Tuple(..) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(module, name) => format!("{module}.{name}"),
            Value::Call(..) => "a call".into(),
            Value::Built => "an object".into(),
            Value::Persistent(..) => "a persistent id".into(),
            Value::Mark => "a mark".into(),
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kind())
    }
}

/// Seals every list and dict among `items` (they are being placed inside
/// another value) and returns the depth of a container holding them.
fn place(items: &[&Value]) -> Result<usize, PickleError> {
    let mut deepest = 0;
    for item in items {
        match item {
            Value::List(list) => list.sealed.set(true),
            Value::Dict(dict) => dict.sealed.set(true),
            _ => {}
        }
        deepest = deepest.max(item.depth());
    }
    if deepest + 1 > MAX_DEPTH {
        return Err(format!("values nested more than {MAX_DEPTH} deep"));
    }
    Ok(deepest + 1)
}

/// Adds `items` to an open list or dict, whose depth grows to hold them.
fn fill<T>(container: &Open<T>, items: &[&Value], add: impl FnOnce(&mut T), what: &str) -> Result<(), PickleError> {
    let depth = place(items)?;
    if container.sealed.get() {
        return Err(format!(
            "{what} to a container already placed inside another value (a recursive structure, not read)"
        ));
    }
    container.depth.set(container.depth.get().max(depth));
    add(&mut container.items.borrow_mut());
    Ok(())
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
    // One entry per BINPUT read, whatever indices the file names.
    let mut memo: HashMap<u32, Value> = HashMap::new();
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
            b')' => stack.push(Value::Tuple(Rc::new(Vec::new()), 1)),
            b't' => {
                let items = pop_mark(&mut stack)?;
                let depth = place(&items.iter().collect::<Vec<_>>())?;
                stack.push(Value::Tuple(Rc::new(items), depth));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("TUPLE of more items than the stack holds".into());
                }
                let items = stack.split_off(stack.len() - n);
                let depth = place(&items.iter().collect::<Vec<_>>())?;
                stack.push(Value::Tuple(Rc::new(items), depth));
            }
            b']' => stack.push(Value::List(Open::new(Vec::new(), 1))),
            b'l' => {
                let items = pop_mark(&mut stack)?;
                let depth = place(&items.iter().collect::<Vec<_>>())?;
                stack.push(Value::List(Open::new(items, depth)));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last() {
                    Some(Value::List(list)) => fill(
                        list,
                        &items.iter().collect::<Vec<_>>(),
                        |list| list.extend(items.iter().cloned()),
                        "APPEND",
                    )?,
                    _ => return Err("APPEND to something that is not a list".into()),
                }
            }
            b'}' => stack.push(Value::Dict(Open::new(Vec::new(), 1))),
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
                let placed: Vec<&Value> = items.iter().collect();
                if op == b'd' {
                    let depth = place(&placed)?;
                    stack.push(Value::Dict(Open::new(pairs.collect(), depth)));
                } else {
                    match stack.last() {
                        Some(Value::Dict(dict)) => fill(dict, &placed, |dict| dict.extend(pairs), "SETITEM")?,
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
                    Value::Dict(Open::new(Vec::new(), 1))
                } else {
                    let depth = place(&[&callable, &args])?;
                    Value::Call(Rc::new((callable, args)), depth)
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
                let depth = place(&[&id])?;
                stack.push(Value::Persistent(Rc::new(id), depth));
            }
            b'q' | b'r' => {
                let index = if op == b'q' {
                    read_array::<1, _>(r, budget, "BINPUT")?[0] as u32
                } else {
                    u32::from_le_bytes(read_array(r, budget, "LONG_BINPUT")?)
                };
                let top = stack.last().cloned().ok_or("BINPUT with an empty stack")?;
                memo.insert(index, top);
            }
            b'h' | b'j' => {
                let index = if op == b'h' {
                    read_array::<1, _>(r, budget, "BINGET")?[0] as u32
                } else {
                    u32::from_le_bytes(read_array(r, budget, "LONG_BINGET")?)
                };
                let value = memo
                    .get(&index)
                    .cloned()
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
        let dict = dict.items();
        assert_eq!(dict[0].0.as_str(), Some("a"));
        let Value::Tuple(items, 1) = &dict[0].1 else {
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

    #[test]
    fn no_value_can_contain_itself() {
        // A list appended to itself (BINPUT, BINGET, APPEND): 24 bytes with
        // the legacy magic number before it once overflowed the stack.
        let error = read(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(error.contains("recursive structure"), "{error}");
        // A dict set as its own value.
        let error = read(b"\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s.").unwrap_err();
        assert!(error.contains("recursive structure"), "{error}");
        // A list inside a tuple, then the tuple appended to the list.
        let error = read(b"\x80\x02]q\x00h\x00\x85q\x01h\x00h\x01a.").unwrap_err();
        assert!(error.contains("recursive structure"), "{error}");
        // Filling a list before placing it is how pickle writes every list.
        let Value::Tuple(outer, 2) = read(b"\x80\x02]q\x00K\x01aK\x02a\x85.").expect("a filled list in a tuple") else {
            panic!("not a tuple of depth 2")
        };
        let Value::List(list) = &outer[0] else {
            panic!("not a list")
        };
        assert_eq!(list.items().len(), 2);
    }

    #[test]
    fn nesting_is_bounded_and_deep_values_drop_without_recursing_far() {
        // 63 one-item tuples around an int nest 63 deep; 64 is the bound.
        let nested = |levels: usize| {
            let mut bytes = b"\x80\x02K\x01".to_vec();
            bytes.extend(std::iter::repeat_n(0x85u8, levels));
            bytes.push(b'.');
            bytes
        };
        assert_eq!(read(&nested(MAX_DEPTH)).expect("64 deep").depth(), MAX_DEPTH);
        let error = read(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(error.contains("nested more than 64 deep"), "{error}");
        // A million levels: refused at the 65th, not a stack overflow.
        assert!(read(&nested(1_000_000)).is_err());
        // The same through lists filled after they were made.
        let mut bytes = b"\x80\x02K\x01".to_vec();
        for _ in 0..=MAX_DEPTH {
            bytes.extend_from_slice(b"]q\x00\x85");
        }
        assert!(read(&bytes).is_err());
    }

    #[test]
    fn memo_indices_cost_one_entry_each() {
        // LONG_BINPUT at index 4 billion stores one value, not 4 billion slots.
        let Value::Int(7) = read(b"\x80\x02K\x07r\x00\x00\x00\xf0j\x00\x00\x00\xf0.").expect("memo") else {
            panic!("not the stored int")
        };
    }
}
