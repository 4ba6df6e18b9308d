//! The text form of addresses: bech32m with the human-readable prefix `tc`, so a mistyped
//! address is caught by its checksum before anything is signed or sent.

use crate::types::Address;
use bech32::{Bech32m, Hrp};

/// The human-readable prefix of every tinychain address.
pub const ADDRESS_PREFIX: &str = "tc";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "address {text:?} is not valid bech32m (a character is wrong or the checksum does not match: check for a typo)"
    )]
    BadChecksumOrCharacters { text: String },
    #[error("address {text:?} has prefix {prefix:?}; tinychain addresses start with \"tc1\"")]
    WrongPrefix { text: String, prefix: String },
    #[error("address {text:?} holds {length} bytes; an address is a 32-byte public key")]
    WrongLength { text: String, length: usize },
    #[error(
        "address {text:?} is not in canonical form: its last character before the checksum sets padding bits that \
         must be zero (check for a typo)"
    )]
    NonZeroPadding { text: String },
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hrp = Hrp::parse_unchecked(ADDRESS_PREFIX);
        let text =
            bech32::encode::<Bech32m>(hrp, &self.0).expect("a 32-byte payload is far below bech32m's length limit");
        f.write_str(&text)
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Short form for traces: enough characters to tell validators apart.
        let text = self.to_string();
        write!(f, "{}", &text[..text.len().min(12)])
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        use bech32::primitives::decode::CheckedHrpstring;
        let checked = CheckedHrpstring::new::<Bech32m>(text)
            .map_err(|_| AddressError::BadChecksumOrCharacters { text: text.to_string() })?;
        let prefix = checked.hrp().to_lowercase();
        if prefix != ADDRESS_PREFIX {
            return Err(AddressError::WrongPrefix { text: text.to_string(), prefix });
        }
        // The decoder drops the 4 bits that pad 256 bits to 52 characters without looking at
        // them; refused unless zero, so each address has exactly one text form (up to case).
        checked.validate_segwit_padding().map_err(|_| AddressError::NonZeroPadding { text: text.to_string() })?;
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::WrongLength { text: text.to_string(), length: bytes.len() })?;
        Ok(Address(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_starts_with_prefix() {
        let address = Address([7u8; 32]);
        let text = address.to_string();
        assert!(text.starts_with("tc1"), "{text}");
        assert_eq!(text.parse::<Address>(), Ok(address));
    }

    #[test]
    fn a_text_with_padding_bits_set_is_refused_even_with_a_valid_checksum() {
        use bech32::primitives::iter::{ByteIterExt, Fe32IterExt};
        use bech32::Fe32;
        let address = Address([42u8; 32]);
        let hrp = Hrp::parse_unchecked(ADDRESS_PREFIX);
        let mut fes: Vec<Fe32> = address.0.iter().copied().bytes_to_fes().collect();
        assert_eq!(fes.len(), 52, "256 bits in 5-bit characters: 51 full ones and one holding 1 bit and 4 of padding");
        let canonical: String = fes.iter().copied().with_checksum::<Bech32m>(&hrp).chars().collect();
        assert_eq!(canonical, address.to_string());
        let last = fes.len() - 1;
        fes[last] = Fe32::try_from(fes[last].to_u8() | 0b0001).expect("below 32");
        let padded: String = fes.into_iter().with_checksum::<Bech32m>(&hrp).chars().collect();
        assert_ne!(padded, canonical);
        assert_eq!(padded.parse::<Address>(), Err(AddressError::NonZeroPadding { text: padded.clone() }));
        assert_eq!(canonical.to_uppercase().parse::<Address>(), Ok(address), "one form up to case");
    }

    #[test]
    fn every_single_character_typo_is_rejected() {
        let text = Address([42u8; 32]).to_string();
        let alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        for position in 3..text.len() {
            for replacement in alphabet.chars() {
                let mut typo: Vec<char> = text.chars().collect();
                if typo[position] == replacement {
                    continue;
                }
                typo[position] = replacement;
                let typo: String = typo.into_iter().collect();
                assert!(typo.parse::<Address>().is_err(), "typo accepted: {typo}");
            }
        }
    }

    #[test]
    fn wrong_prefix_and_length_are_named() {
        let other = bech32::encode::<Bech32m>(Hrp::parse_unchecked("bc"), &[1u8; 32]).unwrap();
        assert!(matches!(other.parse::<Address>(), Err(AddressError::WrongPrefix { .. })));
        let short = bech32::encode::<Bech32m>(Hrp::parse_unchecked("tc"), &[1u8; 20]).unwrap();
        assert!(matches!(short.parse::<Address>(), Err(AddressError::WrongLength { length: 20, .. })));
    }
}
