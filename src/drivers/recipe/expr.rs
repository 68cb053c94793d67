//! The expressions of a recipe's `set` tables and `{…}` templates: text values, variables,
//! `'literals'`, `+` (concatenation) and calls of the transforms ([`FUNCTIONS`]), e.g.
//! `base64(md5(md5(password) + nonce))`. Every value is text; a hash is its lowercase hex.
//!
//! A value is secret when it is the password, a token, a captcha text or anything computed
//! from one ([`Text::secret`]): secrets are masked wherever a recipe's trace is printed or
//! logged. There is no function that reads a file, the environment or the network.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;

/// A value, and whether it must never be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub value: String,
    pub secret: bool,
}

impl Text {
    pub fn public(value: impl Into<String>) -> Text {
        Text {
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(value: impl Into<String>) -> Text {
        Text {
            value: value.into(),
            secret: true,
        }
    }
}

/// The variables of one login attempt.
pub type Vars = BTreeMap<String, Text>;

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Literal(String),
    Var(String),
    Call(String, Vec<Expr>),
    Concat(Vec<Expr>),
}

/// Every transform, and how many arguments it takes (`None`: any number, at least one).
pub const FUNCTIONS: [(&str, Option<usize>); 23] = [
    ("md5", Some(1)),
    ("sha1", Some(1)),
    ("sha256", Some(1)),
    ("hmac_sha256", Some(2)),
    ("base64", Some(1)),
    ("base64url", Some(1)),
    ("base64_decode", Some(1)),
    ("hex", Some(1)),
    ("url_encode", Some(1)),
    ("concat", None),
    ("lower", Some(1)),
    ("upper", Some(1)),
    ("trim", Some(1)),
    ("sm2_c1c3c2", Some(2)),
    ("sm2_c1c2c3", Some(2)),
    ("timestamp", Some(0)),
    ("timestamp_ms", Some(0)),
    ("uuid", Some(0)),
    ("random_hex", Some(1)),
    ("rsa_pkcs1", Some(2)),
    ("rsa_pkcs1_hex", Some(2)),
    ("aes_ecb_pkcs7", Some(2)),
    ("aes_cbc_pkcs7", Some(3)),
];

/// Whether `name` may name a variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Expr {
    /// Parses `text`; the error says where and what was expected.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
        };
        let expr = parser.sum()?;
        parser.skip_space();
        if parser.at < parser.chars.len() {
            return Err(format!(
                "unexpected `{}` at character {}",
                parser.chars[parser.at],
                parser.at + 1
            ));
        }
        Ok(expr)
    }

    /// The variables the expression reads.
    pub fn vars(&self, into: &mut BTreeSet<String>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Var(name) => {
                into.insert(name.clone());
            }
            Expr::Call(_, args) | Expr::Concat(args) => args.iter().for_each(|a| a.vars(into)),
        }
    }

    /// The value under `vars`; a missing variable or a failing transform is an error.
    pub fn eval(&self, vars: &Vars) -> Result<Text, String> {
        match self {
            Expr::Literal(text) => Ok(Text::public(text.clone())),
            Expr::Var(name) => vars
                .get(name)
                .cloned()
                .ok_or_else(|| format!("`{name}` is not set")),
            Expr::Concat(parts) => concat(parts, vars),
            Expr::Call(name, args) => {
                let args = args
                    .iter()
                    .map(|a| a.eval(vars))
                    .collect::<Result<Vec<_>, _>>()?;
                let secret = args.iter().any(|a| a.secret);
                let values: Vec<&str> = args.iter().map(|a| a.value.as_str()).collect();
                Ok(Text {
                    value: call(name, &values)?,
                    secret,
                })
            }
        }
    }
}

fn concat(parts: &[Expr], vars: &Vars) -> Result<Text, String> {
    let mut out = Text::public("");
    for part in parts {
        let text = part.eval(vars)?;
        out.value.push_str(&text.value);
        out.secret |= text.secret;
    }
    Ok(out)
}

/// Runs transform `name` on `args` (their count checked when the recipe was loaded).
fn call(name: &str, args: &[&str]) -> Result<String, String> {
    use sha2::Digest as _;
    let arg = |i: usize| args.get(i).copied().unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(match name {
        "md5" => hex::encode(md5::Md5::digest(arg(0).as_bytes())),
        "sha1" => hex::encode(<sha1::Sha1 as sha1::Digest>::digest(arg(0).as_bytes())),
        "sha256" => hex::encode(sha2::Sha256::digest(arg(0).as_bytes())),
        "hmac_sha256" => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(arg(0).as_bytes())
                .map_err(|e| format!("hmac_sha256: {e}"))?;
            mac.update(arg(1).as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        "base64" => b64.encode(arg(0)),
        "base64url" => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(arg(0)),
        "base64_decode" => {
            let bytes = b64
                .decode(arg(0).trim())
                .map_err(|e| format!("base64_decode: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "base64_decode: not UTF-8 text".to_string())?
        }
        "hex" => hex::encode(arg(0)),
        "url_encode" => {
            percent_encoding::utf8_percent_encode(arg(0), percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        }
        "concat" => args.concat(),
        "lower" => arg(0).to_lowercase(),
        "upper" => arg(0).to_uppercase(),
        "trim" => arg(0).trim().to_string(),
        "sm2_c1c3c2" | "sm2_c1c2c3" => sm2(name, arg(0), arg(1))?,
        "rsa_pkcs1" => b64.encode(super::ciphers::rsa_pkcs1(arg(0), arg(1))?),
        "rsa_pkcs1_hex" => hex::encode(super::ciphers::rsa_pkcs1(arg(0), arg(1))?),
        "aes_ecb_pkcs7" => b64.encode(super::ciphers::aes_ecb(arg(0), arg(1))?),
        "aes_cbc_pkcs7" => b64.encode(super::ciphers::aes_cbc(arg(0), arg(1), arg(2))?),
        "timestamp" => chrono::Utc::now().timestamp().to_string(),
        "timestamp_ms" => chrono::Utc::now().timestamp_millis().to_string(),
        "uuid" => uuid::Uuid::new_v4().to_string(),
        "random_hex" => {
            let n: usize = arg(0)
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or("random_hex: the length must be 1 to 256")?;
            (0..n)
                .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
                .collect()
        }
        other => return Err(format!("`{other}` is not a transform")),
    })
}

/// SM2 under a public key of 128 or 130 hex digits, as lowercase hex without C1's `04`.
fn sm2(name: &str, key: &str, text: &str) -> Result<String, String> {
    let mode = if name == "sm2_c1c3c2" {
        ::sm2::pke::Mode::C1C3C2
    } else {
        ::sm2::pke::Mode::C1C2C3
    };
    let key = crate::drivers::court::sm2::encrypting_key_in(key, mode)?;
    crate::drivers::court::sm2::encrypt_with(&key, &mut getrandom::SysRng, text.as_bytes())
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.at).copied()
    }

    /// `term ('+' term)*`.
    fn sum(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.term()?];
        while self.peek() == Some('+') {
            self.at += 1;
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Concat(parts)
        })
    }

    /// A literal, a variable or a call.
    fn term(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => self.literal(quote),
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.chars.get(self.at).is_some_and(char::is_ascii_digit) {
                    self.at += 1;
                }
                Ok(Expr::Literal(self.chars[start..self.at].iter().collect()))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.at;
                while self
                    .chars
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    self.at += 1;
                }
                let name: String = self.chars[start..self.at].iter().collect();
                if self.peek() == Some('(') {
                    self.at += 1;
                    self.call(name)
                } else {
                    Ok(Expr::Var(name))
                }
            }
            Some(c) => Err(format!(
                "unexpected `{c}` at character {}: expected a name, a 'literal' or a call",
                self.at + 1
            )),
            None => Err("the expression ends too soon".into()),
        }
    }

    fn literal(&mut self, quote: char) -> Result<Expr, String> {
        self.at += 1;
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|c| *c != quote) {
            self.at += 1;
        }
        if self.at >= self.chars.len() {
            return Err(format!("a {quote}literal{quote} is not closed"));
        }
        let text = self.chars[start..self.at].iter().collect();
        self.at += 1;
        Ok(Expr::Literal(text))
    }

    fn call(&mut self, name: String) -> Result<Expr, String> {
        let Some((_, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) else {
            let names: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
            return Err(format!(
                "`{name}` is not a transform (one of: {})",
                names.join(", ")
            ));
        };
        let mut args = Vec::new();
        if self.peek() == Some(')') {
            self.at += 1;
        } else {
            loop {
                args.push(self.sum()?);
                match self.peek() {
                    Some(',') => self.at += 1,
                    Some(')') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(format!("`{name}(`: expected `,` or `)`")),
                }
            }
        }
        match arity {
            Some(n) if args.len() != *n => Err(format!(
                "`{name}` takes {n} argument(s), not {}",
                args.len()
            )),
            None if args.is_empty() => Err(format!("`{name}` takes at least one argument")),
            _ => Ok(Expr::Call(name, args)),
        }
    }
}

/// A template's pieces: text, and `{expression}` holes (`{{`/`}}` stand for braces).
#[derive(Debug, Clone)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Hole(Expr),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut plain = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            plain.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                plain.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err("a `}` without its `{` (write `}}` for a brace)".into());
            }
            let end = tail
                .find('}')
                .ok_or("a `{` without its `}` (write `{{` for a brace)")?;
            if !plain.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut plain)));
            }
            pieces.push(Piece::Hole(Expr::parse(&tail[1..end])?));
            rest = &tail[end + 1..];
        }
        plain.push_str(rest);
        if !plain.is_empty() {
            pieces.push(Piece::Text(plain));
        }
        Ok(Template(pieces))
    }

    pub fn vars(&self, into: &mut BTreeSet<String>) {
        for piece in &self.0 {
            if let Piece::Hole(expr) = piece {
                expr.vars(into);
            }
        }
    }

    pub fn render(&self, vars: &Vars) -> Result<Text, String> {
        let mut out = Text::public("");
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.value.push_str(text),
                Piece::Hole(expr) => {
                    let text = expr.eval(vars)?;
                    out.value.push_str(&text.value);
                    out.secret |= text.secret;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut vars = Vars::new();
        vars.insert("password".into(), Text::secret("pa55"));
        vars.insert("nonce".into(), Text::public("abc"));
        vars
    }

    #[test]
    fn the_edelivery_password_is_base64_of_a_double_md5() {
        let expr = Expr::parse("base64(md5(md5(password) + nonce))").unwrap();
        let got = expr.eval(&vars()).unwrap();
        let inner = hex::encode(<md5::Md5 as sha2::Digest>::digest(b"pa55"));
        let outer = hex::encode(<md5::Md5 as sha2::Digest>::digest(format!("{inner}abc")));
        let want = base64::engine::general_purpose::STANDARD.encode(outer);
        assert_eq!(got, Text::secret(want));
    }

    #[test]
    fn transforms_and_templates() {
        let v = vars();
        let eval = |e: &str| Expr::parse(e).unwrap().eval(&v).unwrap().value;
        assert_eq!(
            eval("sha1('abc')"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            eval("sha256('abc')"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(eval("upper(hex('a b'))"), "612062");
        assert_eq!(eval("url_encode('a b&')"), "a%20b%26");
        assert_eq!(eval("concat(nonce, '-', 1)"), "abc-1");
        assert_eq!(eval("base64_decode(base64(nonce))"), "abc");
        assert_eq!(eval("base64url('??>')"), "Pz8-");
        assert!(
            !Expr::parse("lower(nonce)")
                .unwrap()
                .eval(&v)
                .unwrap()
                .secret
        );
        let t = Template::parse("X {nonce} {{lit}} {md5(password)}").unwrap();
        let text = t.render(&v).unwrap();
        assert!(text.secret && text.value.starts_with("X abc {lit} "));
        for bad in ["md5(", "nope(x)", "md5(a, b)", "'open", "a +", "a b"] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse("{a").is_err());
    }
}
