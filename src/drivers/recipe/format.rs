//! The recipe file (TOML): what a portal's login is, as data. [`Recipe::load`] reads a file
//! or a built-in recipe and checks it whole, so that a mistake stops start-up with the file,
//! the step and the key named; [`Recipe`] is then what the driver runs, parsed once.
//!
//! A recipe cannot read files or the environment (no transform does), and sends requests
//! only to `base_url`'s host and the hosts it lists in `hosts`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::expr::{is_name, Expr, Template};

/// The recipes compiled into tokend: `recipe = "NAME"`, `tokend recipe list|show`.
pub const BUILT_IN: [(&str, &str); 3] = [
    (
        "edelivery",
        include_str!("../../../examples/recipes/edelivery.toml"),
    ),
    (
        "court_zxfw",
        include_str!("../../../examples/recipes/court_zxfw.toml"),
    ),
    (
        "court_baoquan",
        include_str!("../../../examples/recipes/court_baoquan.toml"),
    ),
];

/// The variables every attempt starts with (`parent_token`, `parent_base_url`: only on a site
/// with `from_site`, whose token and API root they are).
pub const GIVEN: [&str; 4] = ["login", "password", "parent_token", "parent_base_url"];

/// A recipe as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    steps: Vec<StepFile>,
    token: TokenFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    form: Option<BTreeMap<String, String>>,
    #[serde(default)]
    json: Option<toml::Value>,
    #[serde(default)]
    captcha: Option<CaptchaFile>,
    #[serde(default)]
    extract: BTreeMap<String, Extract>,
    #[serde(default)]
    answer: Option<Answer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptchaFile {
    image: String,
    #[serde(default = "default_captcha_var")]
    into: String,
}

fn default_captcha_var() -> String {
    "captcha".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    value: String,
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default = "default_life")]
    life: u64,
    #[serde(default = "default_header")]
    header: String,
}

fn default_life() -> u64 {
    3600
}

fn default_header() -> String {
    "Authorization: Bearer {token}".into()
}

/// Where a variable comes from in an answer: exactly one of the sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// A JSON pointer into the answer (`/data/nonce`).
    pub json: Option<String>,
    /// A regex over the body; its `group` (default 1, or 0 without groups).
    pub regex: Option<String>,
    pub group: Option<usize>,
    /// A cookie the portal set.
    pub cookie: Option<String>,
    /// A header of the answer.
    pub header: Option<String>,
    /// `body = true`: the whole body as text.
    #[serde(default)]
    pub body: bool,
    /// Never shown in traces and logs (tokens, session ids).
    #[serde(default)]
    pub secret: bool,
    /// A missing value is not a mismatch (the variable stays unset).
    #[serde(default)]
    pub optional: bool,
}

/// A test of an answer; every key given must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// A JSON pointer: present (and not null), or equal to `equals`, or matching `pattern`.
    pub json: Option<String>,
    pub equals: Option<toml::Value>,
    /// A regex over the body (or over the value at `json`).
    pub pattern: Option<String>,
    /// The HTTP status.
    pub status: Option<u16>,
}

/// How a step's answer is classified, in this order: rate limit, captcha error, credential
/// error, success; an answer that matches none is not recognised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub success: Option<Matcher>,
    pub captcha_error: Option<Matcher>,
    pub credential_error: Option<Matcher>,
    pub rate_limit: Option<Matcher>,
    /// A JSON pointer to the portal's message, quoted in failures (secrets masked).
    pub message: Option<String>,
}

/// One step, parsed.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub set: Vec<(String, Expr)>,
    pub request: Option<Request>,
    pub captcha: Option<(String, String)>,
    pub extract: BTreeMap<String, Extract>,
    pub answer: Option<Answer>,
    pub answer_regexes: BTreeMap<String, regex::Regex>,
}

#[derive(Debug)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    None,
    Form(Vec<(String, Template)>),
    Json(serde_json::Value),
}

/// A recipe, checked and parsed.
#[derive(Debug)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub base_url: String,
    pub hosts: Vec<String>,
    pub headers: Vec<(String, Template)>,
    pub steps: Vec<Step>,
    pub token_value: Expr,
    pub expires_in: Option<Expr>,
    pub life: u64,
    /// `Name: value` with `{token}`: what consumers send.
    pub header: String,
    /// Some line (not a comment) names `parent_token`: the recipe exchanges a parent's token.
    pub uses_parent: bool,
}

/// The text of recipe `spec`: a built-in's name, else a file's path. `Err`: why not.
pub fn source_of(spec: &str) -> Result<(String, String), String> {
    if let Some((name, text)) = BUILT_IN.iter().find(|(name, _)| *name == spec) {
        return Ok((format!("built-in recipe `{name}`"), text.to_string()));
    }
    match std::fs::read_to_string(spec) {
        Ok(text) => Ok((spec.to_string(), text)),
        Err(e) => Err(format!(
            "{spec}: {e} (built-in recipes: {})",
            BUILT_IN.map(|(n, _)| n).join(", ")
        )),
    }
}

impl Recipe {
    /// Reads and checks recipe `spec`; the error names the file, the step and the key.
    pub fn load(spec: &str) -> Result<Recipe, String> {
        let (origin, text) = source_of(spec)?;
        Recipe::parse(&text).map_err(|e| format!("{origin}: {e}"))
    }

    pub fn parse(text: &str) -> Result<Recipe, String> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let uses_parent = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("parent_token"));
        let mut known: BTreeSet<String> = GIVEN.iter().map(|s| s.to_string()).collect();
        if !file.base_url.is_empty() {
            check_base(&file.base_url).map_err(|e| format!("base_url: {e}"))?;
        }
        let hosts = file
            .hosts
            .iter()
            .map(|h| check_host(h).map_err(|e| format!("hosts: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let headers =
            header_templates(&file.headers, &known).map_err(|e| format!("headers.{e}"))?;
        if file.steps.is_empty() {
            return Err("steps: a recipe needs at least one step".into());
        }
        let mut steps = Vec::new();
        let mut names = BTreeSet::new();
        for (i, step) in file.steps.into_iter().enumerate() {
            let at = format!("steps[{i}] (`{}`)", step.name);
            if !names.insert(step.name.clone()) {
                return Err(format!("{at}.name: another step has this name"));
            }
            steps.push(parse_step(step, &mut known).map_err(|e| format!("{at}.{e}"))?);
        }
        let expr = |key: &str, text: &str| -> Result<Expr, String> {
            let expr = Expr::parse(text).map_err(|e| format!("token.{key}: {e}"))?;
            needs(&expr_vars(&expr), &known).map_err(|e| format!("token.{key}: {e}"))?;
            Ok(expr)
        };
        let header_ok = file
            .token
            .header
            .split_once(':')
            .is_some_and(|(name, value)| {
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).is_ok()
                    && value.contains("{token}")
            });
        if !header_ok {
            return Err(format!(
                "token.header: `{}` must be `Name: value` with {{token}}, e.g. \"X-Access-Token: {{token}}\"",
                file.token.header
            ));
        }
        // The token is secret wherever it was taken from, `secret = true` or not.
        let token_value = expr("value", &file.token.value)?;
        let token_vars = expr_vars(&token_value);
        for step in &mut steps {
            for (name, extract) in step.extract.iter_mut() {
                extract.secret |= token_vars.contains(name);
            }
        }
        Ok(Recipe {
            name: file.name,
            description: file.description,
            base_url: file.base_url,
            hosts,
            headers,
            steps,
            token_value,
            expires_in: match &file.token.expires_in {
                Some(text) => Some(expr("expires_in", text)?),
                None => None,
            },
            life: file.token.life.max(1),
            header: file.token.header,
            uses_parent,
        })
    }
}

/// An `http://` or `https://` URL with a host.
pub fn check_base(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(format!("`{url}` is not an http:// or https:// URL")),
    }
}

/// A host of `hosts`: `name` or `name:port`, lowercase, no scheme or path.
fn check_host(host: &str) -> Result<String, String> {
    let lower = host.trim().to_ascii_lowercase();
    let parsed = reqwest::Url::parse(&format!("http://{lower}/")).ok();
    let same = parsed.as_ref().is_some_and(|u| {
        let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
        u.host_str().map(|h| format!("{h}{port}")) == Some(lower.clone())
    });
    if same {
        Ok(lower)
    } else {
        Err(format!(
            "`{host}` is not a host name (`name` or `name:port`, no scheme or path)"
        ))
    }
}

fn expr_vars(expr: &Expr) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    expr.vars(&mut vars);
    vars
}

fn needs(vars: &BTreeSet<String>, known: &BTreeSet<String>) -> Result<(), String> {
    match vars.iter().find(|v| !known.contains(*v)) {
        Some(v) => Err(format!(
            "`{v}` is not set by an earlier step (known: {})",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
        None => Ok(()),
    }
}

/// Header templates: the names must be header names.
fn header_templates(
    table: &BTreeMap<String, String>,
    known: &BTreeSet<String>,
) -> Result<Vec<(String, Template)>, String> {
    if let Some(bad) = table
        .keys()
        .find(|k| reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err())
    {
        return Err(format!("{bad}: not a header name"));
    }
    templates(table, known)
}

fn templates(
    table: &BTreeMap<String, String>,
    known: &BTreeSet<String>,
) -> Result<Vec<(String, Template)>, String> {
    table
        .iter()
        .map(|(key, text)| {
            let template = Template::parse(text).map_err(|e| format!("{key}: {e}"))?;
            let mut vars = BTreeSet::new();
            template.vars(&mut vars);
            needs(&vars, known).map_err(|e| format!("{key}: {e}"))?;
            Ok((key.clone(), template))
        })
        .collect()
}

/// The `set` table in an order where each expression follows what it reads.
fn ordered_set(
    set: &BTreeMap<String, String>,
    known: &mut BTreeSet<String>,
) -> Result<Vec<(String, Expr)>, String> {
    let mut left: Vec<(String, Expr)> = Vec::new();
    for (name, text) in set {
        if !is_name(name) || GIVEN.contains(&name.as_str()) {
            return Err(format!("set.{name}: not a name a variable may have"));
        }
        left.push((
            name.clone(),
            Expr::parse(text).map_err(|e| format!("set.{name}: {e}"))?,
        ));
    }
    let mut ordered = Vec::new();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|(_, e)| needs(&expr_vars(e), known).is_ok());
        let Some(i) = ready else {
            let (name, expr) = &left[0];
            let why = needs(&expr_vars(expr), known).unwrap_err();
            return Err(format!("set.{name}: {why}"));
        };
        let (name, expr) = left.remove(i);
        known.insert(name.clone());
        ordered.push((name, expr));
    }
    Ok(ordered)
}

fn parse_step(step: StepFile, known: &mut BTreeSet<String>) -> Result<Step, String> {
    let set = ordered_set(&step.set, known)?;
    let request = match &step.url {
        Some(url) => Some(parse_request(&step, url, known)?),
        None => {
            if step.method.is_some() || step.form.is_some() || step.json.is_some() {
                return Err("url: a step with a method or a body needs a url".into());
            }
            if step.captcha.is_some() || !step.extract.is_empty() || step.answer.is_some() {
                return Err("url: a step that reads an answer needs a url".into());
            }
            None
        }
    };
    let mut answer_regexes = BTreeMap::new();
    for (name, extract) in &step.extract {
        check_extract(name, extract, &mut answer_regexes)?;
    }
    if let Some(answer) = &step.answer {
        check_answer(answer, &mut answer_regexes)?;
    }
    let captcha = match step.captcha {
        Some(c) => {
            if c.image != "body" && !c.image.starts_with('/') {
                return Err(format!(
                    "captcha.image: `{}` is neither \"body\" nor a JSON pointer (/data/img)",
                    c.image
                ));
            }
            if !is_name(&c.into) {
                return Err(format!("captcha.into: `{}` is not a variable name", c.into));
            }
            known.insert(c.into.clone());
            Some((c.image, c.into))
        }
        None => None,
    };
    for name in step.extract.keys() {
        known.insert(name.clone());
    }
    Ok(Step {
        name: step.name,
        set,
        request,
        captcha,
        extract: step.extract,
        answer: step.answer,
        answer_regexes,
    })
}

fn parse_request(step: &StepFile, url: &str, known: &BTreeSet<String>) -> Result<Request, String> {
    let method_text = step.method.as_deref().unwrap_or("GET").to_uppercase();
    let method = match method_text.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
            reqwest::Method::from_bytes(method_text.as_bytes()).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "method: `{other}` is not GET, POST, PUT, PATCH or DELETE"
            ))
        }
    };
    let url = {
        let mut one = BTreeMap::new();
        one.insert("url".to_string(), url.to_string());
        templates(&one, known)?.remove(0).1
    };
    let headers = header_templates(&step.headers, known).map_err(|e| format!("headers.{e}"))?;
    let body = match (&step.form, &step.json) {
        (Some(_), Some(_)) => {
            return Err("json: a step sends a form or a JSON body, not both".into())
        }
        (Some(form), None) => Body::Form(templates(form, known).map_err(|e| format!("form.{e}"))?),
        (None, Some(json)) => {
            let json = serde_json::to_value(json).map_err(|e| format!("json: {e}"))?;
            check_json_templates(&json, known).map_err(|e| format!("json.{e}"))?;
            Body::Json(json)
        }
        (None, None) => Body::None,
    };
    Ok(Request {
        method,
        url,
        headers,
        body,
    })
}

/// Every string of a JSON body template parses and reads only known variables.
fn check_json_templates(value: &serde_json::Value, known: &BTreeSet<String>) -> Result<(), String> {
    match value {
        serde_json::Value::String(text) => {
            let template = Template::parse(text)?;
            let mut vars = BTreeSet::new();
            template.vars(&mut vars);
            needs(&vars, known)
        }
        serde_json::Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_json_templates(v, known)),
        serde_json::Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_json_templates(v, known).map_err(|e| format!("{k}: {e}"))),
        _ => Ok(()),
    }
}

fn check_extract(
    name: &str,
    extract: &Extract,
    regexes: &mut BTreeMap<String, regex::Regex>,
) -> Result<(), String> {
    let at = format!("extract.{name}");
    if !is_name(name) || GIVEN.contains(&name) {
        return Err(format!("{at}: not a name a variable may have"));
    }
    let sources = [
        extract.json.is_some(),
        extract.regex.is_some(),
        extract.cookie.is_some(),
        extract.header.is_some(),
        extract.body,
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(format!(
            "{at}: give exactly one of json = \"/pointer\", regex = \"…\", cookie = \"NAME\", header = \"NAME\", body = true"
        ));
    }
    if let Some(pointer) = &extract.json {
        check_pointer(pointer).map_err(|e| format!("{at}.json: {e}"))?;
    }
    if let Some(pattern) = &extract.regex {
        let regex = regex::Regex::new(pattern).map_err(|e| format!("{at}.regex: {e}"))?;
        regexes.insert(at, regex);
    }
    Ok(())
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{pointer}` is not a JSON pointer: it must start with `/`"
        ))
    }
}

fn check_answer(
    answer: &Answer,
    regexes: &mut BTreeMap<String, regex::Regex>,
) -> Result<(), String> {
    let matchers = [
        ("success", &answer.success),
        ("captcha_error", &answer.captcha_error),
        ("credential_error", &answer.credential_error),
        ("rate_limit", &answer.rate_limit),
    ];
    for (key, matcher) in matchers {
        let Some(m) = matcher else { continue };
        let at = format!("answer.{key}");
        if m.json.is_none() && m.pattern.is_none() && m.status.is_none() {
            return Err(format!("{at}: give json, pattern or status"));
        }
        if m.equals.is_some() && m.json.is_none() {
            return Err(format!("{at}.equals: needs json = \"/pointer\""));
        }
        if let Some(pointer) = &m.json {
            check_pointer(pointer).map_err(|e| format!("{at}.json: {e}"))?;
        }
        if let Some(pattern) = &m.pattern {
            let regex = regex::Regex::new(pattern).map_err(|e| format!("{at}.pattern: {e}"))?;
            regexes.insert(at, regex);
        }
    }
    if let Some(pointer) = &answer.message {
        check_pointer(pointer).map_err(|e| format!("answer.message: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_recipes_load() {
        for (name, _) in BUILT_IN {
            Recipe::load(name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn mistakes_name_the_step_and_the_key() {
        let base = "base_url = \"http://x\"\n[token]\nvalue = \"t\"\n";
        let err = |steps: &str| Recipe::parse(&format!("{base}{steps}")).unwrap_err();
        let got =
            err("[[steps]]\nname = \"a\"\nurl = \"/x\"\n[steps.extract.t]\njson = \"data\"\n");
        assert!(got.starts_with("steps[0] (`a`).extract.t.json"), "{got}");
        let got = err("[[steps]]\nname = \"a\"\nset.p = \"md5(nonce)\"\n");
        assert!(
            got.starts_with("steps[0] (`a`).set.p: `nonce` is not set"),
            "{got}"
        );
        let got = err("[[steps]]\nname = \"a\"\nset.t = \"rot13(password)\"\n");
        assert!(got.contains("`rot13` is not a transform"), "{got}");
        let got = err("[[steps]]\nname = \"a\"\nurl = \"/x?{secret}\"\n");
        assert!(got.starts_with("steps[0] (`a`).url"), "{got}");
        let got = err("[[steps]]\nname = \"a\"\nset.t = \"login\"\nfile = \"/etc/passwd\"\n");
        assert!(got.contains("unknown field `file`"), "{got}");
        let got = Recipe::parse(
            "[[steps]]\nname = \"a\"\nset.t = \"login\"\n[token]\nvalue = \"t\"\nheader = \"X\"\n",
        )
        .unwrap_err();
        assert!(got.starts_with("token.header"), "{got}");
    }

    #[test]
    fn hosts_and_header_names_are_checked_and_the_token_is_secret() {
        let step = "[[steps]]\nname = \"a\"\nurl = \"/x\"\nextract.t = { json = \"/t\" }\n";
        let parse = |top: &str, steps: &str| {
            Recipe::parse(&format!("{top}\n{steps}[token]\nvalue = \"t\"\n"))
        };
        let got = parse("hosts = [\"https://evil.example/x\"]", step).unwrap_err();
        assert!(got.starts_with("hosts: "), "{got}");
        let bad_header =
            "[[steps]]\nname = \"a\"\nurl = \"/x\"\nheaders = { \"Bad Name\" = \"v\" }\n";
        let got = parse("", bad_header).unwrap_err();
        assert!(got.starts_with("steps[0] (`a`).headers.Bad Name"), "{got}");
        let recipe = parse("hosts = [\"SSO.example.cn:8443\"]", step).unwrap();
        assert_eq!(recipe.hosts, ["sso.example.cn:8443"]);
        assert!(recipe.steps[0].extract["t"].secret, "the token is secret");
    }
}
