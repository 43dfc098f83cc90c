//! Every text a person reads on the gateway's pages, in one place. A deployment translates or
//! rewords any of them under `[strings]` in its configuration; a name in `{braces}` is filled in by
//! the page (escaped, often emphasised) and an override must keep exactly the same ones, which is
//! checked at start. Error descriptions that come from the protocol (the extension's
//! `error_description`) are shown as they are.

use std::collections::BTreeSet;

use serde::Deserialize;

macro_rules! strings {
    ($($(#[doc = $doc:literal])* $name:ident = $default:literal,)*) => {
        /// The pages' texts (`[strings]` overrides any of them).
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Strings {
            $($(#[doc = $doc])* pub $name: String,)*
        }

        impl Default for Strings {
            fn default() -> Self {
                Self { $($name: $default.to_owned(),)* }
            }
        }

        /// Names one of the [`Strings`], so that a page can be described before the deployment's
        /// texts are at hand (error pages, see `views::Pending`).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Key {
            $($name,)*
        }

        impl Strings {
            pub fn get(&self, key: Key) -> &str {
                match key {
                    $(Key::$name => &self.$name,)*
                }
            }

            /// Each text's name, default and value here.
            fn each(&self) -> Vec<(&'static str, &'static str, &str)> {
                vec![$((stringify!($name), $default, self.$name.as_str()),)*]
            }
        }
    };
}

strings! {
    /// The pages' language (the `lang` attribute, for screen readers and hyphenation).
    lang = "en",
    sign_in_required_title = "Sign-in required",
    sign_in_required_detail = "No authenticated user reached this page. Sign in, then open the link again.",
    form_not_accepted_title = "Request not accepted",
    form_not_accepted_detail = "This form was not issued to you for this decision. Go back to the application and start again.",
    method_not_allowed_title = "Method not allowed",
    method_not_allowed_detail = "Use GET or POST.",
    unavailable_title = "Temporarily unavailable",
    request_expired_title = "This sign-in request is no longer valid",
    request_expired_detail = "It has expired or was already completed. Go back to the application and start again.",
    timed_out_title = "Request timed out",
    invalid_request_title = "Invalid request",
    invalid_authorization_request_title = "Invalid authorization request",
    too_many_attempts_title = "Too many attempts",
    too_many_attempts_detail = "Too many codes that did not match. Wait a few minutes, then enter the code your device shows.",
    device_connected_title = "Device connected",
    device_connected_detail = "You can return to your device.",
    device_denied_title = "Request denied",
    device_denied_detail = "The device was not given access.",
    consent_title = "Allow access?",
    /// `{client}`: the client's name (as its host names it, for a metadata document).
    consent_heading = "Allow {client} to access your account?",
    /// `{host}`: the host of a metadata-document client id, the one name a stranger cannot fake.
    published_by = "This application is published by {host} (client {client_id}).",
    client_id_line = "Client {client_id}.",
    /// `{client}`: the client's name, as the logo's alternative text.
    client_logo_alt = "Logo of {client}",
    caution = "Caution:",
    loopback_warning = "this application returns only to addresses on your own computer (localhost), so any program running here could present itself under this name. Allow only if you have just started it yourself.",
    /// `{scheme}`: a private-use URI scheme such as `cursor:`.
    scheme_warning = "this application returns to {scheme} links, which any program on this device can claim, so it could present itself under this name. Allow only if you have just started it yourself.",
    signed_in_as = "Signed in as {user}.",
    sent_to_host = "After you decide you will be sent to {host}.",
    sent_to_scheme = "After you decide you will be sent to the program that opens {scheme} links on this device.",
    /// `{resource}`: the RFC 8707 resource (the MCP server's URL) the tokens are for.
    for_resource = "For the service {resource}.",
    asks_for = "It asks to:",
    allow = "Allow",
    deny = "Deny",
    device_title = "Connect a device",
    device_prompt = "Enter the code your device shows.",
    device_code_label = "Code from your device",
    device_continue = "Continue",
    apps_title = "Connected apps",
    apps_intro = "These applications can act for you. Revoking one ends its access at once; it has to ask you again.",
    apps_none = "No application is connected to your account.",
    apps_returns_to = "Returns to",
    apps_access = "Access",
    apps_resource = "Service",
    apps_granted = "Connected",
    apps_last_used = "Last used",
    apps_never_used = "Not yet",
    apps_last_used_note = "“Last used” is the last time the application was issued tokens (when it connected or renewed its access); each use of a token in between is not recorded.",
    /// `{client}`: the application's name, for screen readers (the button's accessible name).
    apps_revoke = "Revoke access of {client}",
    apps_revoke_button = "Revoke access",
    /// The navigation landmark's name.
    navigation = "Your account",
    sessions_title = "Where you are signed in",
    sessions_intro = "Each browser where you signed in stays signed in until its session expires or you sign out there. Signing out does not disconnect your apps: they keep the access you gave them until you revoke it.",
    sessions_none = "No browser is signed in as you.",
    sessions_this_browser = "This browser",
    sessions_other_browser = "Another browser",
    sessions_started = "Signed in",
    /// Followed by the provider's host and how it authenticated the user (`pwd`, `mfa`, …).
    sessions_through = "Through",
    sessions_expires = "Expires",
    /// `{time}`: when that browser signed in, for screen readers (the button's accessible name).
    sessions_sign_out = "Sign out the browser signed in at {time}",
    sessions_sign_out_this = "Sign out this browser",
    sessions_sign_out_button = "Sign out",
    sessions_everywhere_note = "Sign out every browser listed here, this one included.",
    sessions_everywhere_button = "Sign out everywhere",
    signed_out_title = "Signed out",
    signed_out_detail = "You are signed out of this server.",
    signed_out_everywhere_title = "Signed out everywhere",
    signed_out_everywhere_detail = "Every browser where you were signed in is signed out, this one included. Your connected apps keep their access until you revoke it.",
    sign_out_title = "Sign out?",
    sign_out_button = "Sign out",
    sign_out_note = "Your connected apps keep their access; this browser only is signed out.",
    sign_out_refused_title = "Sign-out request not accepted",
    sign_in_unavailable_title = "Sign-in is unavailable",
    sign_in_unavailable_detail = "The sign-in provider could not be reached. Try again in a moment.",
    sign_in_failed_title = "Sign-in failed",
    sign_in_no_code_detail = "The provider's answer has no code.",
    sign_in_not_allowed_title = "You may not sign in here",
    /// `{reason}`: the rule of this server the account does not meet, one of the `not_allowed_*`.
    sign_in_not_allowed_detail = "You were signed in, but {reason}.",
    not_allowed_email_unverified = "the provider has not verified your email address",
    not_allowed_email_domain = "your account's verified email address is not at a domain allowed here",
    /// `{claim}`: the claim of the account (e.g. `groups`) that holds none of the values required here.
    not_allowed_claim = "your account's {claim} does not allow signing in here",
    choose_provider_title = "Sign in",
    choose_provider_intro = "Choose where you have an account.",
    /// `{provider}`: the provider's name (`display_name`, else its host).
    sign_in_with = "Sign in with {provider}",
    sign_in_refused_by_provider_title = "The sign-in provider did not sign you in",
    sign_in_expired_title = "This sign-in is no longer valid",
    sign_in_expired_detail = "It took too long or was started in another browser. Go back to the application and start again.",
    sign_in_mismatch_title = "This sign-in is not the one this browser started",
    start_again_detail = "Go back to the application and start again.",
    other_browser_title = "This request was started in another browser",
    other_browser_detail = "Go back to the application and start again from this browser.",
}

/// The `{name}`s a text fills in.
pub fn placeholders(text: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                names.insert(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    names
}

impl Strings {
    /// An override must fill in the same names as the text it replaces, and say something.
    pub fn validate(&self) -> Result<(), String> {
        for (name, default, value) in self.each() {
            if value.trim().is_empty() {
                return Err(format!("strings.{name} must not be empty"));
            }
            if placeholders(value) != placeholders(default) {
                return Err(format!(
                    "strings.{name} must contain exactly {:?}, as {default:?} does",
                    placeholders(default)
                ));
            }
        }
        Ok(())
    }
}

/// A text on a page: one of the deployment's [`Strings`], or words that came with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Key(Key),
    Raw(String),
}

impl Text {
    pub fn resolve<'a>(&'a self, strings: &'a Strings) -> &'a str {
        match self {
            Text::Key(key) => strings.get(*key),
            Text::Raw(text) => text,
        }
    }
}

impl From<Key> for Text {
    fn from(key: Key) -> Self {
        Text::Key(key)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text::Raw(text.to_owned())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text::Raw(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_keeps_the_names_it_fills_in() {
        assert!(Strings::default().validate().is_ok());
        let translated = Strings {
            consent_heading: "{client} möchte auf Ihr Konto zugreifen".into(),
            ..Strings::default()
        };
        assert!(translated.validate().is_ok());
        let lost = Strings {
            consent_heading: "Zugriff erlauben?".into(),
            ..Strings::default()
        };
        assert!(lost.validate().unwrap_err().contains("consent_heading"));
        let toml: Strings = toml::from_str("allow = \"Erlauben\"").unwrap();
        assert_eq!(toml.allow, "Erlauben");
        assert_eq!(toml.deny, "Deny");
        assert!(toml::from_str::<Strings>("alow = \"x\"").is_err());
    }
}
