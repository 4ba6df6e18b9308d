//! Amounts in TC as people write them: `parse_amount("1.5")` is 150,000,000 base units, exactly,
//! with integer arithmetic only (no floating point anywhere), and `format_amount` shows base
//! units with as few decimals as are exact. 1 TC = 10^8 base units (`UNITS_PER_COIN`).

use tinychain_core::types::{Amount, UNITS_PER_COIN};

/// Decimals of one TC (1 TC = 10^8 base units).
pub const AMOUNT_DECIMALS: usize = 8;
/// Why a TC amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("the amount is empty; write an amount in TC such as 1.5")]
    Empty,
    #[error("amount {text:?} is negative; amounts are 0 or more")]
    Negative { text: String },
    #[error("amount {text:?} is not an amount in TC: write digits with an optional '.' and up to 8 decimals, e.g. 1.5 or 0.00000001")]
    NotAnAmount { text: String },
    #[error("amount {text:?} has {decimals} decimals; TC has 8 (the smallest amount is 0.00000001)")]
    TooManyDecimals { text: String, decimals: usize },
    #[error("amount {text:?} is too large: the most is {} TC", format_amount(u64::MAX))]
    TooLarge { text: String },
}

/// Parses an amount in TC (`"1.5"`, `"0.00000001"`, `"1000000"`) into base units, exactly.
/// Refuses signs, exponents, spaces, more than 8 decimals and amounts above `u64::MAX` units.
pub fn parse_amount(text: &str) -> Result<Amount, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.starts_with('-') {
        return Err(AmountError::Negative { text: text.to_string() });
    }
    let not_an_amount = || AmountError::NotAnAmount { text: text.to_string() };
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return Err(not_an_amount());
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > AMOUNT_DECIMALS {
        return Err(AmountError::TooManyDecimals { text: text.to_string(), decimals: fraction.len() });
    }
    let too_large = || AmountError::TooLarge { text: text.to_string() };
    // Digits only, so parsing fails only on overflow.
    let whole_units: u64 = whole.parse().map_err(|_| too_large())?;
    let padded = format!("{fraction:0<width$}", width = AMOUNT_DECIMALS);
    let fraction_units: u64 = padded.parse().map_err(|_| not_an_amount())?;
    whole_units.checked_mul(UNITS_PER_COIN).and_then(|units| units.checked_add(fraction_units)).ok_or_else(too_large)
}

/// Shows base units in TC with as few decimals as are exact: 150000000 → "1.5", 1 →
/// "0.00000001", 0 → "0". No unit suffix; `parse_amount(&format_amount(x)) == Ok(x)`.
pub fn format_amount(amount: Amount) -> String {
    let whole = amount / UNITS_PER_COIN;
    let fraction = amount % UNITS_PER_COIN;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = AMOUNT_DECIMALS);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// An amount as the wallet prints it: "1.5 TC", "0.00000001 TC", "0 TC".
pub fn format_tc(amount: Amount) -> String {
    format!("{} TC", format_amount(amount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount("1.5"), Ok(150_000_000));
        assert_eq!(parse_amount("0.00000001"), Ok(1));
        assert_eq!(parse_amount("1000000"), Ok(1_000_000 * UNITS_PER_COIN));
        assert_eq!(parse_amount("0"), Ok(0));
        assert_eq!(parse_amount("007.10"), Ok(710_000_000));
        assert_eq!(parse_amount("184467440737.09551615"), Ok(u64::MAX));
        assert!(matches!(parse_amount("184467440737.09551616"), Err(AmountError::TooLarge { .. })));
        assert!(matches!(parse_amount("99999999999999999999999"), Err(AmountError::TooLarge { .. })));
        assert!(matches!(parse_amount("1.123456789"), Err(AmountError::TooManyDecimals { decimals: 9, .. })));
        assert!(matches!(parse_amount("-1"), Err(AmountError::Negative { .. })));
        assert_eq!(parse_amount(""), Err(AmountError::Empty));
        for bad in ["1e3", "1.", ".5", "+1", " 1", "1 ", "1,5", "1.2.3", "0x10", "١"] {
            assert!(matches!(parse_amount(bad), Err(AmountError::NotAnAmount { .. })), "{bad:?}");
        }
    }

    #[test]
    fn amounts_format_with_as_few_decimals_as_exact() {
        assert_eq!(format_amount(0), "0");
        assert_eq!(format_amount(150_000_000), "1.5");
        assert_eq!(format_amount(1), "0.00000001");
        assert_eq!(format_amount(1_000_000 * UNITS_PER_COIN), "1000000");
        assert_eq!(format_amount(u64::MAX), "184467440737.09551615");
    }

    proptest! {
            #[test]
            fn format_then_parse_is_the_identity(amount in any::<u64>()) {
                prop_assert_eq!(parse_amount(&format_amount(amount)), Ok(amount));
            }

            #[test]
            fn parse_never_panics(text in "\\PC{0,30}") {
                let _ = parse_amount(&text);
            }
    }
}
