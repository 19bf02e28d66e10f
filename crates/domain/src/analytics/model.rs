//! The analytics model: the effective requested model without one trailing
//! reasoning suffix such as `(high)` or `(8192)`.

#![warn(missing_docs)]

const EFFORTS: [&str; 9] = [
    "none", "auto", "-1", "minimal", "low", "medium", "high", "xhigh", "max",
];

/// Strips one trailing `(<effort>)` suffix. No trimming anywhere: `gpt-5 (high)`
/// becomes `gpt-5 ` and `a(high)(low)` becomes `a(high)`.
pub fn analytics_model(value: &str) -> &str {
    let Some(body) = value.strip_suffix(')') else {
        return value;
    };
    let Some(open) = body.rfind('(') else {
        return value;
    };
    if open == 0 {
        return value;
    }
    let inner = &body[open + 1..];
    if EFFORTS
        .iter()
        .any(|effort| effort.eq_ignore_ascii_case(inner))
        || is_go_atoi_non_negative(inner)
    {
        &value[..open]
    } else {
        value
    }
}

/// Go `strconv.Atoi` acceptance with a non-negative result: optional sign, ASCII
/// digits only, fits in i64.
fn is_go_atoi_non_negative(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return false;
    }
    match text.parse::<i64>() {
        Ok(value) => value >= 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::analytics_model;

    #[test]
    fn suffix_rules_match_the_spec_examples() {
        for (input, expected) in [
            ("gpt-5(high)", "gpt-5"),
            ("gpt-5(HIGH)", "gpt-5"),
            ("gpt-5(8192)", "gpt-5"),
            ("gpt-5(-1)", "gpt-5"),
            ("gpt-5(007)", "gpt-5"),
            ("gpt-5(+5)", "gpt-5"),
            ("gpt-5(-0)", "gpt-5"),
            ("gpt-5 (high)", "gpt-5 "),
            ("a(high)(low)", "a(high)"),
            ("foo(bar)", "foo(bar)"),
            ("gpt-5(-2)", "gpt-5(-2)"),
            ("gpt-5(1_000)", "gpt-5(1_000)"),
            ("gpt-5(5.0)", "gpt-5(5.0)"),
            ("gpt-5( 5)", "gpt-5( 5)"),
            ("(high)", "(high)"),
            ("gpt-5(high)x", "gpt-5(high)x"),
            ("", ""),
        ] {
            assert_eq!(analytics_model(input), expected, "{input}");
        }
    }
}
