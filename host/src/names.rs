//! What a stream, consumer, plugin or processor may be called: one rule
//! for the service and the processor registry.

/// Names: 1–128 characters of `[A-Za-z0-9_.-]`. The error says what a
/// `kind` name may be.
pub fn validate(kind: &str, name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > weir_proto::defaults::NAME_CHARS_MAX || !valid_chars {
        return Err(format!(
            "invalid {kind} name {name:?}: use 1-{} characters of A-Z a-z 0-9 _ - .",
            weir_proto::defaults::NAME_CHARS_MAX
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["clicks", "a", "A-b_c.9", &"x".repeat(128)] {
            assert!(validate("stream", good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "slash/", "ünï", &"x".repeat(129)] {
            let error = validate("stream", bad).expect_err(bad);
            assert!(error.contains("invalid stream name"), "{error}");
        }
    }
}
