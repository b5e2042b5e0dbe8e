//! What the account forms accept, parsed once at the edge.

/// An email address as people type it: trimmed, one `@` with something on each side, no spaces,
/// at most 254 characters. Whether it is deliverable is not ours to tell here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// What people are called on the site: trimmed, 1 to 60 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// A password someone chooses: 8 to 128 characters, any characters (NIST SP 800-63B: length
/// matters; composition rules do not).
pub struct NewPassword(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountInputError {
    #[error("Enter an email address like name@example.com.")]
    Email,
    #[error("Enter a name of 1 to 60 characters.")]
    Name,
    #[error("Choose a password of at least 8 characters.")]
    PasswordTooShort,
    #[error("A password can be at most 128 characters long.")]
    PasswordTooLong,
    #[error("The two new passwords are not the same.")]
    PasswordsDiffer,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, AccountInputError> {
        let email = raw.trim();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        valid.then(|| Email(email.to_string())).ok_or(AccountInputError::Email)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl DisplayName {
    pub fn parse(raw: &str) -> Result<DisplayName, AccountInputError> {
        let name = raw.trim();
        let length = name.chars().count();
        (1..=60).contains(&length).then(|| DisplayName(name.to_string())).ok_or(AccountInputError::Name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NewPassword {
    /// The password, and its confirmation typed again.
    pub fn parse(password: &str, again: &str) -> Result<NewPassword, AccountInputError> {
        match password.chars().count() {
            n if n < 8 => Err(AccountInputError::PasswordTooShort),
            n if n > 128 => Err(AccountInputError::PasswordTooLong),
            _ if password != again => Err(AccountInputError::PasswordsDiffer),
            _ => Ok(NewPassword(password.to_string())),
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_inputs_are_parsed_at_the_edge() {
        assert_eq!(Email::parse(" ann@example.com ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "@example.com", "ann@", "a b@example.com", "a@b@c"] {
            assert_eq!(Email::parse(bad), Err(AccountInputError::Email), "{bad:?}");
        }
        assert_eq!(DisplayName::parse("  Ann ").unwrap().as_str(), "Ann");
        assert_eq!(DisplayName::parse("   "), Err(AccountInputError::Name));
        assert!(matches!(NewPassword::parse("short", "short"), Err(AccountInputError::PasswordTooShort)));
        assert!(matches!(NewPassword::parse("long enough", "long enougH"), Err(AccountInputError::PasswordsDiffer)));
        assert!(matches!(NewPassword::parse(&"é".repeat(129), &"é".repeat(129)), Err(AccountInputError::PasswordTooLong)));
        assert!(NewPassword::parse("correct horse", "correct horse").is_ok());
    }
}
