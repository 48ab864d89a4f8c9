//! Recognising secret values: known token formats, credentials in URLs, and
//! assignments to secret-looking names. Pure text logic, shared by the
//! manifest validation (no inline secrets), the scan of tracked files and
//! `berth init` (which moves secrets out of the imported compose file).

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// What kind of secret a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClerkSecretKey,
    OpenRouterKey,
    AwsAccessKeyId,
    PrivateKeyBlock,
    UrlCredentials,
    SecretAssignment,
}

impl SecretKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::ClerkSecretKey => "a Clerk secret key",
            Self::OpenRouterKey => "an OpenRouter API key",
            Self::AwsAccessKeyId => "an AWS access key id",
            Self::PrivateKeyBlock => "a private key block",
            Self::UrlCredentials => "a password inside a URL",
            Self::SecretAssignment => "a value assigned to a secret-looking name",
        }
    }
}

/// One secret found in a line: its kind and the byte range of the secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHit {
    pub kind: SecretKind,
    pub span: Range<usize>,
    /// The variable the value is assigned to, when there is one.
    pub name: Option<String>,
}

/// How a file is written, which decides whether unquoted values count as literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.env`, YAML, TOML, INI, properties, Dockerfiles, shell: `KEY=value` is a literal.
    Config,
    /// Source code: only a quoted string is a literal (`password = read_env()` is not a secret).
    Code,
}

impl FileKind {
    pub fn for_path(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        let code = [
            "rs", "py", "js", "mjs", "cjs", "ts", "tsx", "jsx", "go", "java", "kt", "rb", "php",
            "cs", "c", "h", "cpp", "hpp", "swift", "scala", "svelte", "vue", "ex", "exs",
        ];
        if code.contains(&ext) {
            Self::Code
        } else {
            Self::Config
        }
    }
}

static TOKENS: LazyLock<Vec<(SecretKind, Regex)>> = LazyLock::new(|| {
    vec![
        (
            SecretKind::ClerkSecretKey,
            Regex::new(r"\bsk_(?:test|live)_[^\s'\x22`#,;]{3,}").unwrap(),
        ),
        (
            SecretKind::OpenRouterKey,
            Regex::new(r"\bsk-or-v1-[^\s'\x22`#,;]{3,}").unwrap(),
        ),
        (
            SecretKind::AwsAccessKeyId,
            Regex::new(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b").unwrap(),
        ),
        (
            SecretKind::PrivateKeyBlock,
            Regex::new(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----").unwrap(),
        ),
    ]
});

static URL_CREDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\x22]+:(?P<pw>[^\s@/'\x22]+)@").unwrap()
});

static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)^\s*(?:export\s+|ENV\s+|-\s+)?["']?(?P<name>[A-Z0-9_.\-]*?(?:SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?TOKEN|CLIENT_?SECRET)[A-Z0-9_.\-]*)["']?\s*(?::=|=|:)\s*(?P<value>.*)$"#,
    )
    .unwrap()
});

/// `NAME = "value"` after `{` or `,`: a pair of an inline table (TOML `env = { A =
/// "x", API_KEY = "..." }`), where the line-start assignment above does not look.
static INLINE_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)[{,]\s*["']?(?P<name>[A-Z0-9_.\-]*?(?:SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?TOKEN|CLIENT_?SECRET)[A-Z0-9_.\-]*)["']?\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')"#,
    )
    .unwrap()
});

/// What [`mask`] shows, at the start of a text.
static MASKED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:sk_test_|sk_live_|sk-or-v1-|AKIA|ASIA)?\*{4}\(\d+ chars\)").unwrap()
});

static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?TOKEN|_TOKEN$|^TOKEN$|DSN$)").unwrap()
});

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:|changeme|change[_-]me|placeholder|example|dummy|todo|tbd|redacted|none|null|nil|replace[_-]?me|x+|\*+|\.+|-+|your[_-].*|<[^>]*>|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|\{\{.*\}\}|%\(.*\)s?)$",
    )
    .unwrap()
});

static QUOTED_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)["'](?P<name>[a-z0-9_.\-]*(?:secret|password|passwd|api_?key|access_?key|private_?key|auth_?token|client_?secret)[a-z0-9_.\-]*)["']\s*:\s*["'](?P<value>[^"']+)["']"#,
    )
    .unwrap()
});

/// Names that mention a secret but configure something about it (`PASSWORD_MIN_LENGTH`,
/// `SECRET_FILE`, `API_KEY_HEADER`): their values are settings, not secrets.
fn names_a_setting(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "_file",
        "_path",
        "_dir",
        "_url",
        "_uri",
        "_length",
        "_len",
        "_min",
        "_max",
        "_ttl",
        "_timeout",
        "_enabled",
        "_policy",
        "_rounds",
        "_cost",
        "_header",
        "_name",
        "_env",
        "_var",
        "_id",
        "_hint",
        "_reset_url",
        "_expiry",
    ];
    let n = name.to_ascii_lowercase();
    SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// Values that cannot be secrets: numbers, booleans, file paths.
fn is_plain_setting(value: &str) -> bool {
    let v = value.trim();
    v.parse::<f64>().is_ok()
        || matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off"
        )
        || v.starts_with('/')
        || v.starts_with("./")
}

/// Does this environment-variable name look like it holds a secret?
pub fn is_secret_name(name: &str) -> bool {
    SECRET_NAME.is_match(name)
}

/// Is this value a placeholder rather than a real secret (`""`, `changeme`, `${VAR}`, `<your key>`)?
pub fn is_placeholder(value: &str) -> bool {
    PLACEHOLDER.is_match(value.trim())
}

/// Secrets in a single value (no assignment parsing): token formats and URL passwords.
pub fn scan_value(value: &str) -> Vec<SecretHit> {
    let mut hits = Vec::new();
    for (kind, re) in TOKENS.iter() {
        for m in re.find_iter(value) {
            hits.push(SecretHit {
                kind: *kind,
                span: m.range(),
                name: None,
            });
        }
    }
    for c in URL_CREDS.captures_iter(value) {
        let pw = c.name("pw").unwrap();
        if !is_placeholder(pw.as_str()) {
            hits.push(SecretHit {
                kind: SecretKind::UrlCredentials,
                span: pw.range(),
                name: None,
            });
        }
    }
    hits.sort_by_key(|h| h.span.start);
    hits
}

/// Secrets in one line of a file.
pub fn scan_line(line: &str, kind: FileKind) -> Vec<SecretHit> {
    if line.contains("berth:allow-secret") {
        return Vec::new();
    }
    let mut hits = scan_value(line);
    if hits.is_empty()
        && let Some(c) = ASSIGNMENT.captures(line)
    {
        let name = c.name("name").unwrap().as_str();
        let v = c.name("value").unwrap();
        if let Some(span) = literal_span(v.as_str(), kind) {
            let span = v.start() + span.start..v.start() + span.end;
            if !is_placeholder(&line[span.clone()])
                && !names_a_setting(name)
                && !is_plain_setting(&line[span.clone()])
            {
                hits.push(SecretHit {
                    kind: SecretKind::SecretAssignment,
                    span,
                    name: Some(name.to_string()),
                });
            }
        }
    }
    // Every secret-named pair of an inline table, beside what was found above (a
    // line may hold several; a span already masked is not masked twice).
    for c in INLINE_PAIR.captures_iter(line) {
        let name = c.name("name").unwrap().as_str();
        let v = c.name("dq").or_else(|| c.name("sq")).unwrap();
        let span = v.range();
        if span.is_empty()
            || is_placeholder(v.as_str())
            || names_a_setting(name)
            || is_plain_setting(v.as_str())
            || hits
                .iter()
                .any(|h| h.span.start < span.end && span.start < h.span.end)
        {
            continue;
        }
        hits.push(SecretHit {
            kind: SecretKind::SecretAssignment,
            span,
            name: Some(name.to_string()),
        });
    }
    hits.sort_by_key(|h| h.span.start);
    if hits.is_empty() {
        // `"client_secret": "..."` inside a line of JSON (or a JS/Python dict).
        for c in QUOTED_KEY.captures_iter(line) {
            let name = c.name("name").unwrap().as_str();
            let v = c.name("value").unwrap();
            if !is_placeholder(v.as_str())
                && !names_a_setting(name)
                && !is_plain_setting(v.as_str())
            {
                hits.push(SecretHit {
                    kind: SecretKind::SecretAssignment,
                    span: v.range(),
                    name: Some(name.to_string()),
                });
            }
        }
    }
    hits
}

/// The span of the literal at the start of `v`: a quoted string, or (in config
/// files) a bare word up to a comment. `None` when the value is not a literal.
fn literal_span(v: &str, kind: FileKind) -> Option<Range<usize>> {
    let trimmed = v.trim_start();
    let off = v.len() - trimmed.len();
    let first = trimmed.chars().next()?;
    if first == '"' || first == '\'' || first == '`' {
        let end = trimmed[1..].find(first)?;
        return Some(off + 1..off + 1 + end);
    }
    if kind == FileKind::Code {
        return None;
    }
    // A bare value ends at an inline comment (` #`) or the end of the line.
    let end = trimmed.find(" #").unwrap_or(trimmed.len());
    let word = trimmed[..end].trim_end();
    // Structured values (`{`, `[`, `|` YAML blocks) and references are not literals.
    if word.is_empty() || word.starts_with(['{', '[', '|', '>', '(', '&', '*', '!']) {
        return None;
    }
    Some(off..off + word.len())
}

/// `line` with every secret in it replaced by its mask (for showing source lines).
pub fn mask_line(line: &str) -> String {
    let mut hits = scan_line(line, FileKind::Config);
    if hits.is_empty() {
        return line.to_string();
    }
    hits.sort_by_key(|h| std::cmp::Reverse(h.span.start));
    let mut out = line.to_string();
    // A value shown already masked (a diagnostic masks its own value first) is
    // left as it is: masking is done once.
    hits.retain(|h| !MASKED.is_match(&line[h.span.start..]));
    for h in hits {
        let masked = mask(&line[h.span.clone()]);
        out.replace_range(h.span, &masked);
    }
    out
}

/// Mask secrets in the source lines a diagnostic shows.
pub fn mask_diagnostic(d: &mut crate::diag::Diagnostic) {
    for l in d.primary.iter_mut().chain(d.related.iter_mut()) {
        if let Some(t) = &l.line_text {
            l.line_text = Some(mask_line(t));
        }
    }
}

/// Show a secret without revealing it: its recognised prefix, then its length.
pub fn mask(value: &str) -> String {
    let known = ["sk_test_", "sk_live_", "sk-or-v1-", "AKIA", "ASIA"];
    let prefix = known
        .iter()
        .find(|p| value.starts_with(**p))
        .copied()
        .unwrap_or("");
    format!("{prefix}****({} chars)", value.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(line: &str, kind: FileKind) -> Vec<SecretKind> {
        scan_line(line, kind).into_iter().map(|h| h.kind).collect()
    }

    #[test]
    fn seed_env_block_is_caught() {
        use SecretKind::*;
        let c = FileKind::Config;
        assert_eq!(kinds("POSTGRES_PASSWORD=postgres", c), [SecretAssignment]);
        assert_eq!(
            kinds("CLERK_SECRET_KEY=sk_test_<redacted>", c),
            [ClerkSecretKey]
        );
        assert_eq!(kinds("OPENROUTER_API_KEY=sk-or-v1-...", c), [OpenRouterKey]);
        assert_eq!(
            kinds(
                "REALESTATE_OPENROUTER_API_KEY=sk-or-v1-...  # Optional: separate budget tracking",
                c
            ),
            [OpenRouterKey]
        );
    }

    #[test]
    fn placeholders_and_references_are_not_secrets() {
        let c = FileKind::Config;
        for line in [
            "POSTGRES_PASSWORD=",
            "POSTGRES_PASSWORD=${POSTGRES_PASSWORD}",
            "CLERK_SECRET_KEY: ${CLERK_SECRET_KEY}",
            "API_KEY=<your key here>",
            "PASSWORD=changeme",
            "secrets = [\"CLERK_SECRET_KEY\"]",
            "VITE_CLERK_PUBLISHABLE_KEY=pk_test_abcdef",
            "LLM_CHAT_MODEL=anthropic/claude-3-sonnet",
            "DATABASE_URL=postgresql://app:${DB_PASSWORD}@db/app",
        ] {
            assert!(scan_line(line, c).is_empty(), "{line}");
        }
        assert!(scan_line("password = os.environ['DB_PASSWORD']", FileKind::Code).is_empty());
        assert!(scan_line("let api_key = read_key();", FileKind::Code).is_empty());
    }

    #[test]
    fn settings_about_secrets_are_not_secrets() {
        let c = FileKind::Config;
        for line in [
            "PASSWORD_MIN_LENGTH=8",
            "PASSWORD_RESET_URL=/reset",
            "SECRET_FILE=/run/secrets/db",
            "API_KEY_HEADER=X-Api-Key",
            "REQUIRE_PASSWORD=true",
        ] {
            assert!(scan_line(line, c).is_empty(), "{line}");
        }
    }

    #[test]
    fn json_keys_anywhere_in_a_line() {
        let hits = scan_line(
            r#"{"client_id": "abc", "client_secret": "9f8e7d6c5b4a"}"#,
            FileKind::Config,
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].name.as_deref(), Some("client_secret"));
    }

    #[test]
    fn code_string_literals_count() {
        assert_eq!(
            kinds("DB_PASSWORD = \"hunter22\"", FileKind::Code),
            [SecretKind::SecretAssignment]
        );
    }

    #[test]
    fn url_passwords_and_keys() {
        let hits = scan_line(
            "DATABASE_URL=postgresql://u:s3cret@db:5432/x",
            FileKind::Config,
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].kind, SecretKind::UrlCredentials);
        assert_eq!(
            &"DATABASE_URL=postgresql://u:s3cret@db:5432/x"[hits[0].span.clone()],
            "s3cret"
        );
        assert_eq!(
            kinds("key: AKIAIOSFODNN7EXAMPLE", FileKind::Config),
            [SecretKind::AwsAccessKeyId]
        );
        assert_eq!(
            kinds("-----BEGIN OPENSSH PRIVATE KEY-----", FileKind::Config),
            [SecretKind::PrivateKeyBlock]
        );
    }

    #[test]
    fn allow_marker_silences_a_line() {
        assert!(scan_line("TOKEN_SECRET=abc123 # berth:allow-secret", FileKind::Config).is_empty());
    }

    #[test]
    fn lines_are_masked_in_place() {
        assert_eq!(
            mask_line("env = { KEY = \"sk_live_abcdefghij\", PORT = 1 }"),
            "env = { KEY = \"sk_live_****(18 chars)\", PORT = 1 }"
        );
        assert_eq!(mask_line("port = 8011"), "port = 8011");
    }

    #[test]
    fn every_secret_pair_of_an_inline_table_is_masked_once() {
        let line = r#"env = { A = 1, STRIPE_SECRET_KEY = "rk_live_abcdefghijklmnop", B = "sk_live_abcdefghijklmnopq", DB_PASSWORD = 'hunter22', NEXT_PUBLIC_API_KEY_URL = "" }"#;
        let masked = mask_line(line);
        assert!(!masked.contains("rk_live_abc"), "{masked}");
        assert!(!masked.contains("sk_live_abc"), "{masked}");
        assert!(!masked.contains("hunter22"), "{masked}");
        assert_eq!(
            masked,
            r#"env = { A = 1, STRIPE_SECRET_KEY = "****(24 chars)", B = "sk_live_****(25 chars)", DB_PASSWORD = '****(8 chars)', NEXT_PUBLIC_API_KEY_URL = "" }"#
        );
    }

    #[test]
    fn a_masked_line_is_not_masked_again() {
        let line = r#"env = { STRIPE_SECRET_KEY = "rk_live_abcdefghijklmnop", B = "sk_live_abcdefghijklmnopq" }"#;
        let once = mask_line(line);
        assert_eq!(mask_line(&once), once);
    }

    #[test]
    fn masks_keep_only_the_known_prefix() {
        assert_eq!(mask("sk_test_abcdef"), "sk_test_****(14 chars)");
        assert_eq!(mask("postgres"), "****(8 chars)");
    }
}
