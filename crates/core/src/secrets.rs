//! Secrets kept out of what brewline prints: which configuration keys hold one, and URLs with
//! their password hidden.

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// Whether a configuration key (a field, or a client property such as Kafka's
/// `sasl.password`) holds a secret: a password, a secret key, a token, a private key or a
/// JAAS login.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "private"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with(".key")
        || key.ends_with(".key.pem")
}

/// `text` with the password of every URL in it (`scheme://user:password@host`) replaced by
/// [`REDACTED`]; the rest, the user name included, is kept.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment or the end of the URL.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon + 1]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden_and_the_rest_is_kept() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "rediss://recs:s3cret@cache:6380/1",
                "rediss://recs:<redacted>@cache:6380/1",
            ),
            ("mysql://root@db:3306", "mysql://root@db:3306"),
            (
                "mysql://capture:p@ss:word@db:3306/coffee_shop?ssl-mode=required",
                "mysql://capture:<redacted>@db:3306/coffee_shop?ssl-mode=required",
            ),
            (
                "postgres://u:pw@h/db and redis://:only-a-password@h",
                "postgres://u:<redacted>@h/db and redis://:<redacted>@h",
            ),
            ("no url here", "no url here"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("http://user:pw@h", "http://user:<redacted>@h"),
        ] {
            assert_eq!(redact_urls(url), shown, "{url}");
        }
    }

    #[test]
    fn keys_of_secrets_are_known_by_name() {
        for key in [
            "password",
            "sasl.password",
            "secret_access_key",
            "token",
            "ssl.key.password",
            "sasl.jaas.config",
            "ssl.key.pem",
            "ssl.keystore.key",
            "private_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "access_key_id",
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "static_url",
            "order_state_prefix",
            "diamond_customers_key",
            "counters_key",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
