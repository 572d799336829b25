//! Environment switches that turn one CUDA optimisation off, so that one
//! binary can measure both sides of it (or step round it on a GPU where it
//! misbehaves) without a rebuild.

// Without the `cuda` feature the switches are compiled for their tests only.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::OnceLock;

/// An `on | off` switch read from an environment variable once; unset is
/// `on`, anything else an error naming the variable and both values.
pub(crate) struct Switch {
    variable: &'static str,
    /// What `on` selects, for the error message.
    on_means: &'static str,
    /// What `off` selects.
    off_means: &'static str,
    value: OnceLock<Result<bool, String>>,
}

impl Switch {
    pub(crate) const fn new(variable: &'static str, on_means: &'static str, off_means: &'static str) -> Self {
        Self {
            variable,
            on_means,
            off_means,
            value: OnceLock::new(),
        }
    }

    /// Whether the switch is on; a bad value is an error every time it is asked.
    pub(crate) fn is_on(&self) -> candle_core::Result<bool> {
        self.value
            .get_or_init(|| self.parse(std::env::var(self.variable).ok().as_deref()))
            .clone()
            .map_err(candle_core::Error::Msg)
    }

    fn parse(&self, value: Option<&str>) -> Result<bool, String> {
        match value.map(str::trim) {
            None | Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(format!(
                "{}={other:?}: expected `on` ({}) or `off` ({})",
                self.variable, self.on_means, self.off_means
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_takes_on_and_off_and_refuses_anything_else() {
        let switch = Switch::new("CAF_EXAMPLE", "ours", "theirs");
        assert_eq!(switch.parse(None), Ok(true));
        assert_eq!(switch.parse(Some("on")), Ok(true));
        assert_eq!(switch.parse(Some(" off\n")), Ok(false));
        let error = switch.parse(Some("0")).unwrap_err();
        assert!(
            error.contains("CAF_EXAMPLE=\"0\"") && error.contains("`on` (ours)") && error.contains("`off` (theirs)"),
            "{error}"
        );
    }
}
