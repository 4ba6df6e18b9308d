//! Where the wallet commands get a passphrase: the `TINYCHAIN_PASSPHRASE` environment variable
//! if it is set (even to the empty string), otherwise a prompt on the terminal. The wallet
//! library itself never reads the environment or prompts; it takes the passphrase from a closure
//! (`passphrase_source`).

use tinychain_wallet::keystore::KeystoreError;
use zeroize::Zeroizing;

/// The environment variable that supplies the passphrase without a prompt.
pub const PASSPHRASE_ENV_VAR: &str = "TINYCHAIN_PASSPHRASE";

/// Why no passphrase could be had.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error("no passphrase: there is no terminal to prompt on; set the {PASSPHRASE_ENV_VAR} environment variable")]
    NoTerminal,
    #[error("the passphrase in {PASSPHRASE_ENV_VAR} is not valid UTF-8")]
    NotUtf8,
    #[error("the two passphrases typed differ; nothing was changed")]
    Mismatch,
    #[error("reading the passphrase from the terminal failed")]
    Prompt(#[source] std::io::Error),
}

/// `passphrase_from_env_or_prompt` as the closure the wallet's operations take.
pub fn passphrase_source(
    prompt: &'static str,
    confirm: bool,
) -> impl FnOnce() -> Result<Zeroizing<String>, KeystoreError> {
    move || passphrase_from_env_or_prompt(prompt, confirm).map_err(|error| KeystoreError::Passphrase(Box::new(error)))
}

/// The passphrase from `TINYCHAIN_PASSPHRASE` if it is set (even to the empty string),
/// otherwise typed at the terminal after `prompt`; with `confirm` (when a key is being sealed)
/// it is asked twice and both must match. Without a terminal and without the variable, the
/// error says to set the variable.
pub fn passphrase_from_env_or_prompt(prompt: &str, confirm: bool) -> Result<Zeroizing<String>, PassphraseError> {
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV_VAR) {
        let text = value.into_string().map_err(|_| PassphraseError::NotUtf8)?;
        return Ok(Zeroizing::new(text));
    }
    if !has_terminal() {
        return Err(PassphraseError::NoTerminal);
    }
    let read = |text: &str| -> Result<Zeroizing<String>, PassphraseError> {
        rpassword::prompt_password(text).map(Zeroizing::new).map_err(PassphraseError::Prompt)
    };
    let first = read(prompt)?;
    if confirm {
        let second = read("Repeat the passphrase: ")?;
        if *first != *second {
            return Err(PassphraseError::Mismatch);
        }
    }
    Ok(first)
}

fn has_terminal() -> bool {
    #[cfg(unix)]
    {
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
    }
    #[cfg(not(unix))]
    {
        use std::io::IsTerminal;
        std::io::stdin().is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_comes_from_the_environment_even_when_empty() {
        // The only test in this binary that touches the variable.
        std::env::set_var(PASSPHRASE_ENV_VAR, "");
        assert_eq!(*passphrase_from_env_or_prompt("unused: ", true).unwrap(), "");
        std::env::set_var(PASSPHRASE_ENV_VAR, "from the environment");
        assert_eq!(*passphrase_from_env_or_prompt("unused: ", false).unwrap(), "from the environment");
        std::env::remove_var(PASSPHRASE_ENV_VAR);
    }

    #[test]
    fn the_no_terminal_error_says_what_to_set() {
        let message = PassphraseError::NoTerminal.to_string();
        assert!(message.contains(PASSPHRASE_ENV_VAR), "{message}");
    }
}
