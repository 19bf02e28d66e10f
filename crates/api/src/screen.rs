//! The admin-key screen of the CPA proxy: whatever is forwarded to CPA is cleared of the
//! admin key first, wherever a client may have put it.
//!
//! A client credential travels in more places than `Authorization`: CPA itself reads
//! API keys from `X-Api-Key`, `X-Goog-Api-Key` and the `key` and `auth_token` query
//! parameters, its Management Key from `X-Management-Key`, and browsers send cookies. A
//! forwarded request therefore keeps no header, cookie or query parameter whose text may
//! hold the admin key:
//! - a header whose value holds it is dropped (whatever its name);
//! - a cookie whose name or value holds it is taken out of `Cookie` (the other cookies
//!   stay);
//! - a query parameter whose name or value (percent-decoded) holds it is taken out of the
//!   query (the other parameters stay as sent, in their order).
//!
//! "May hold the admin key" costs no hash of the key: the text (whole, percent-decoded,
//! and each piece of it between spaces and the separators of headers, cookies and
//! queries, a `Basic` credential decoded) contains `cmp_admin_`, starts with `cpamp_`
//! (the key shape of older releases) or was verified as the admin key since the server
//! started (remembered from a login, so keys of any shape are caught once used).

use std::borrow::Cow;

use base64::Engine;

use cpamp_domain::keys::ADMIN_KEY_PREFIX;

/// Key prefix of older releases.
const OLDER_PREFIX: &str = "cpamp_";

/// Characters that separate credentials inside header values, cookies and queries.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ';' | '=' | ':' | '&' | '"' | '\'')
}

/// True when `text` may hold the admin key; `remembered` says whether a token verified
/// as the admin key before.
pub fn may_hold_admin_key(text: &str, remembered: &dyn Fn(&str) -> bool) -> bool {
    let decoded = percent_decoded(text);
    if holds(&decoded, remembered) || (decoded != text && holds(text, remembered)) {
        return true;
    }
    // `Basic base64(user:password)`: CPA does not read it, but the key is no less the key.
    let trimmed = decoded.trim();
    if let Some((scheme, rest)) = trimmed.split_at_checked(6)
        && scheme.eq_ignore_ascii_case("basic ")
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(rest.trim())
    {
        return holds(&String::from_utf8_lossy(&bytes), remembered);
    }
    false
}

fn holds(text: &str, remembered: &dyn Fn(&str) -> bool) -> bool {
    let text = text.trim();
    if text.is_empty() {
        return false;
    }
    if text.contains(ADMIN_KEY_PREFIX) || remembered(text) {
        return true;
    }
    text.split(is_separator)
        .filter(|piece| !piece.is_empty())
        .any(|piece| piece.starts_with(OLDER_PREFIX) || remembered(piece))
}

/// `%XX` sequences decoded (others left as they are, bytes that are not UTF-8 replaced)
/// and `+` read as a space, as query strings and cookies encode.
fn percent_decoded(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    // `+` first: a `%2B` stands for a literal plus.
    let decoded = crate::percent::decode(&text.replace('+', " "));
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

/// The `Cookie` header value without the cookies whose value may hold the admin key;
/// `None` when no cookie is left.
pub fn screen_cookies(value: &str, remembered: &dyn Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !may_hold_admin_key(pair, remembered))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The query string without the parameters that may hold the admin key; `None` when no
/// parameter is left.
pub fn screen_query(query: &str, remembered: &dyn Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|parameter| !parameter.is_empty())
        .filter(|parameter| !may_hold_admin_key(parameter, remembered))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "cmp_admin_Screen0123456789abcdefABCDEF0123";

    fn nothing(_: &str) -> bool {
        false
    }

    #[test]
    fn the_admin_key_is_found_in_every_shape_it_travels_in() {
        for text in [
            ADMIN.to_string(),
            format!("Bearer {ADMIN}"),
            format!("  bearer   {ADMIN} "),
            format!("key={ADMIN}"),
            format!("Token token=\"{ADMIN}\""),
            format!("a, {ADMIN}"),
            "cmp%5Fadmin%5FScreen0123".to_string(),
            "cmp_admin%5fScreen0123".to_string(),
            "cpamp_OldStyleKey123".to_string(),
            "x=cpamp_OldStyleKey123".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN}"))
            ),
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode("u:cpamp_Older")
            ),
        ] {
            assert!(may_hold_admin_key(&text, &nothing), "{text}");
        }
        for text in [
            "",
            "Bearer sk-client-key-1",
            "AIzaSyFAKE-0000",
            "cmp_admi",
            "my_cpamp_thing",
            "Basic YWRtaW46YWRtaW4=",
            "Basic !!!not base64",
        ] {
            assert!(!may_hold_admin_key(text, &nothing), "{text}");
        }
    }

    #[test]
    fn a_remembered_key_of_any_shape_is_found() {
        let remembered = |token: &str| token == "plain-operator-secret";
        assert!(may_hold_admin_key("plain-operator-secret", &remembered));
        assert!(may_hold_admin_key(
            "Bearer plain-operator-secret",
            &remembered
        ));
        assert!(may_hold_admin_key("plain%2Doperator-secret", &remembered));
        assert!(may_hold_admin_key(
            "session=plain-operator-secret",
            &remembered
        ));
        assert!(!may_hold_admin_key("plain-operator", &remembered));
    }

    #[test]
    fn only_cookies_holding_the_key_are_taken_out() {
        assert_eq!(
            screen_cookies(&format!("theme=dark; session={ADMIN}; lang=en"), &nothing).as_deref(),
            Some("theme=dark; lang=en")
        );
        assert_eq!(
            screen_cookies(&format!("token=\"{ADMIN}\""), &nothing),
            None
        );
        assert_eq!(
            screen_cookies("cpamp_lang=en; a=b", &nothing).as_deref(),
            Some("a=b"),
            "a name shaped like an older key counts too"
        );
        assert_eq!(
            screen_cookies("theme=dark", &nothing).as_deref(),
            Some("theme=dark")
        );
    }

    #[test]
    fn only_parameters_holding_the_key_are_taken_out() {
        assert_eq!(
            screen_query(&format!("limit=20&key={ADMIN}&x=1"), &nothing).as_deref(),
            Some("limit=20&x=1")
        );
        assert_eq!(screen_query("auth_token=cmp%5Fadmin%5Fabc", &nothing), None);
        assert_eq!(
            screen_query(&format!("{ADMIN}&a=%20b"), &nothing).as_deref(),
            Some("a=%20b")
        );
        assert_eq!(
            screen_query("key=AIzaSyFAKE&limit=5", &nothing).as_deref(),
            Some("key=AIzaSyFAKE&limit=5")
        );
    }
}
