//! Check `no_panic`: any panic or failed assertion inside a node fails the run. The runner
//! catches them (madsim aborts the run on an unexpected panic) and records them in the history.
//! Never excuses a panic, whatever faults were injected.

use crate::history::History;

pub fn check(h: &History) -> Result<(), String> {
    match h.panics.first() {
        None => Ok(()),
        Some((node, message)) => Err(format!("{node} panicked: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_fails() {
        let mut h = History::default();
        assert!(check(&h).is_ok());
        h.panics.push(("broker1".into(), "hw regressed".into()));
        let err = check(&h).expect_err("must fail");
        assert!(err.contains("hw regressed"));
    }
}
