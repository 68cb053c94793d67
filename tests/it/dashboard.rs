//! The dashboard (SPEC §14) in a real browser: tokend with two sites and accounts in several
//! states, the page opened in headless Chromium, its DOM checked after its scripts ran, an
//! unblock clicked, a screenshot kept, and every request the page made checked to have stayed
//! on 127.0.0.1. With an admin token set, the page without it shows only the token prompt.
//!
//! Needs Chromium (Debian package `chromium`): skipped without it, failed in CI.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::browser::{find_chromium, Browser};
use crate::support::harness::Harness;
use crate::support::portal::Portal;
use crate::support::{self, court_portal, harness};

const WAIT: Duration = Duration::from_secs(20);

fn chromium() -> Option<PathBuf> {
    let found = find_chromium();
    if support::require("Chromium", found.is_some()) {
        found
    } else {
        None
    }
}

/// Runs blocking browser work off the actix thread, which runs tokend's actors.
async fn in_browser<T: Send + 'static>(
    browser: Browser,
    work: impl FnOnce(&mut Browser) -> T + Send + 'static,
) -> (Browser, T) {
    actix_web::rt::task::spawn_blocking(move || {
        let mut browser = browser;
        let out = work(&mut browser);
        (browser, out)
    })
    .await
    .unwrap()
}

/// Every request the page made went to the daemon on 127.0.0.1 (or was the page's own blank
/// start).
fn assert_stayed_local(browser: &Browser, origin: &str) {
    let urls = browser.requested_urls();
    assert!(
        urls.iter().any(|u| u.starts_with(origin)),
        "no request seen: {urls:?}"
    );
    for url in &urls {
        assert!(
            url.starts_with(origin) || url == "about:blank",
            "the page requested {url}, outside {origin}"
        );
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(name)
}

/// A row of the accounts table as the page shows it: `(site, account) -> state`.
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('section.site')].flatMap(s => \
     [...s.querySelectorAll('tr[data-account]')].map(r => [s.dataset.site, r.dataset.account, \
     r.dataset.state, r.innerText])))";

#[actix_rt::test]
async fn the_dashboard_shows_sites_accounts_and_charts_and_unblocks_an_account() {
    let Some(chromium) = chromium() else { return };
    let portal = Portal::start();
    let second_site = format!(
        "[[sites]]\nname = \"court_baoquan\"\ndriver = \"http\"\nlogin_url = \"{}\"\n",
        portal.login_url()
    );
    let prefix = format!("tokend-dash-{}", support::unique());
    let retry = "[retry]\nnetwork_retry_delay_base = 0.05\ncaptcha_retry_delay = 0.05\nlogin_timeout = 10\n";
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(retry)
        .extra(&second_site)
        .start()
        .await;
    let alice = h.add_account("alice", "pw-a", true);
    let mallory = h.add_account("mallory", "pw-m", false);
    let carol = h.add_account_on("court_baoquan", "carol", "pw-c", false);
    h.add_account_on("court_baoquan", "dave", "pw-d", false);
    // A name that is also markup: the page must print it, not render it.
    h.add_account_on("court_baoquan", "<b>eve</b>", "pw-e", false);
    tokend::accounts::set_active(&h.tokend.state.pool, "court_baoquan", "dave", false).unwrap();

    // Tokens for alice and carol (a login, then a cache hit); mallory's password is refused.
    for (site, id) in [
        ("court_zxfw", alice),
        ("court_zxfw", alice),
        ("court_baoquan", carol),
    ] {
        let (status, body) = h
            .acquire(json!({"site_name": site, "credential_id": id}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    h.portal.state.accept("mallory", "other");
    let (status, body) = h
        .acquire(json!({"site_name": "court_zxfw", "credential_id": mallory}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(h.account_state("mallory").await["state"], "blacklisted");
    h.history().await; // written, so the page's history table has rows

    // The page's files carry the security headers; the data needs the API.
    let origin = format!("http://{}", h.tokend.addr);
    let page = h.client.get(format!("{origin}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let (status, openapi) = h.api_get("/api/v1/automation/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/automation/performance/timeline",
        "/api/v1/automation/tokens/status",
        "/api/v1/automation/performance/alerts/history",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} not documented"
        );
    }

    let url = format!("{origin}/");
    let shot = screenshot_path("dashboard.png");
    let browser = Browser::launch(&chromium);
    let shot_path = shot.clone();
    let (browser, (rows, charts, markup)) = in_browser(browser, move |b| {
        b.navigate(&url);
        b.wait_for(
            "the accounts of both sites",
            "document.body.dataset.loaded === 'true' && \
             document.querySelectorAll('tr[data-account]').length === 5",
            WAIT,
        );
        let rows: Value = serde_json::from_str(b.eval(ROWS).as_str().unwrap()).unwrap();
        let charts = b.eval(
            "[document.querySelector('#chart-acquisitions svg').dataset.bars, \
              document.querySelector('#chart-durations svg').dataset.marks, \
              document.querySelectorAll('#chart-acquisitions rect').length]",
        );
        let markup = b.eval("document.querySelectorAll('#site-list b').length");
        b.screenshot(&shot_path);
        (rows, charts, markup)
    })
    .await;
    println!("dashboard screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // Both sites, every account with its state; tokens shown by expiry and source only.
    let row = |site: &str, account: &str| -> Value {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == site && r[1] == account)
            .unwrap_or_else(|| panic!("no row for {site}/{account}: {rows}"))
            .clone()
    };
    assert_eq!(row("court_zxfw", "alice")[2], "active");
    assert_eq!(row("court_zxfw", "mallory")[2], "blacklisted");
    assert!(row("court_zxfw", "mallory")[3]
        .as_str()
        .unwrap()
        .contains("credential_error"));
    assert_eq!(row("court_baoquan", "carol")[2], "active");
    assert_eq!(row("court_baoquan", "dave")[2], "inactive");
    assert!(row("court_baoquan", "<b>eve</b>")[3]
        .as_str()
        .unwrap()
        .contains("<b>eve</b>"));
    assert_eq!(markup, 0, "an account name was rendered as HTML");
    let alice_text = row("court_zxfw", "alice")[3].as_str().unwrap().to_string();
    // The last login in the browser's time zone (UTC+8), not in UTC.
    let last_login: chrono::DateTime<chrono::Utc> = h.account_state("alice").await
        ["last_login_success_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let local = last_login.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
    assert!(
        alice_text.contains(&local.format("%H:%M:%S").to_string()),
        "last login {last_login} not shown in UTC+8: {alice_text}"
    );
    assert!(
        alice_text.contains("cache") && (alice_text.contains("59m") || alice_text.contains("58m")),
        "alice's token: expiry countdown and source expected: {alice_text}"
    );
    assert!(
        !rows.to_string().contains("tok-"),
        "a token reached the page: {rows}"
    );
    // Without a login budget per account, the budget column says so.
    assert!(
        alice_text.contains("unlimited"),
        "logins left this hour expected: {alice_text}"
    );
    // The acquisitions chart has bars (two logins, a hit, a failure); the login chart points.
    assert!(
        charts[0].as_str().unwrap().parse::<u32>().unwrap() >= 3,
        "{charts}"
    );
    assert!(
        charts[1].as_str().unwrap().parse::<u32>().unwrap() >= 2,
        "{charts}"
    );

    // Unblock mallory from the page: the row turns active, and the daemon agrees.
    let (browser, result) = in_browser(browser, |b| {
        b.eval(
            "document.querySelector('tr[data-account=\"mallory\"] button[data-action=\"unblock\"]').click(); true",
        );
        b.wait_for(
            "mallory shown active after the unblock",
            "document.querySelector('tr[data-account=\"mallory\"]').dataset.state === 'active'",
            WAIT,
        );
        b.eval("document.getElementById('result').innerText")
    })
    .await;
    assert!(
        result.as_str().unwrap().contains("unblocked"),
        "the action's result is shown: {result}"
    );
    assert_eq!(h.account_state("mallory").await["state"], "active");

    // Invalidate alice's token from the page; reset the metrics, which asks first.
    let (browser, (invalidated, asked, reset, warmed)) = in_browser(browser, |b| {
        b.eval(
            "document.querySelector('tr[data-account=\"alice\"] button[data-action=\"invalidate\"]').click(); true",
        );
        let invalidated = b.wait_for(
            "alice without a token",
            "(() => { const row = document.querySelector('tr[data-account=\"alice\"]'); \
               return !row.querySelector('button[data-action=\"invalidate\"]') && row.innerText; })()",
            WAIT,
        );
        b.eval(
            "document.querySelector('section.site[data-site=\"court_baoquan\"] \
             button[data-action=\"warm-up\"]').click(); true",
        );
        let warmed = b.wait_for(
            "the warm-up's answer",
            "(() => { const r = document.getElementById('result').innerText; \
               return r.includes('Warm up court_baoquan') && r; })()",
            WAIT,
        );
        b.eval("document.getElementById('reset-metrics').click(); true");
        let asked = b.eval("!document.getElementById('reset-confirm').hidden");
        b.eval("document.getElementById('reset-yes').click(); true");
        let reset = b.wait_for(
            "the reset's answer",
            "document.getElementById('result').innerText.includes('zeroed') && \
             document.getElementById('result').innerText",
            WAIT,
        );
        (invalidated, asked, reset, warmed)
    })
    .await;
    assert!(
        invalidated.as_str().unwrap().contains("none"),
        "{invalidated}"
    );
    assert!(warmed.as_str().unwrap().starts_with('✓'), "{warmed}");
    assert_eq!(asked, true, "the reset asks for a confirmation first");
    assert!(reset.as_str().unwrap().contains("before: 3"), "{reset}");
    let (_, metrics) = h.api_get("/api/v1/automation/performance/metrics").await;
    assert_eq!(metrics["data"]["total_acquisitions"], 0, "{metrics}");

    // The history filter narrows the table to one account.
    let (browser, filtered) = in_browser(browser, |b| {
        b.eval(
            "document.getElementById('filter-account').value = 'mallory'; \
             document.querySelector('#history-filter button').click(); true",
        );
        b.wait_for(
            "the history filtered to mallory",
            "(() => { const rows = [...document.querySelectorAll('#history-table tbody tr')]; \
              return rows.length > 0 && rows.every(r => r.innerText.includes('mallory')) \
                && rows.map(r => r.innerText).join('|'); })()",
            WAIT,
        )
    })
    .await;
    assert!(
        filtered.as_str().unwrap().contains("credential_error"),
        "{filtered}"
    );
    // History times are UTC with a zone in the API, and local (UTC+8) on the page.
    let (_, history) = h
        .api_get("/api/v1/automation/history?account=mallory")
        .await;
    let created = history["data"]["items"][0]["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z'), "{created}");
    let created: chrono::DateTime<chrono::Utc> = created.parse().unwrap();
    let local = created.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
    assert!(
        filtered
            .as_str()
            .unwrap()
            .contains(&local.format("%H:%M:%S").to_string()),
        "{created} not shown in UTC+8: {filtered}"
    );

    assert_stayed_local(&browser, &origin);
    assert_eq!(browser.page_errors(), Vec::<String>::new());
}

/// tokend with `admin_token` set and one site, outside the harness (which has none).
async fn start_with_admin_token(
    dir: &std::path::Path,
    token: &str,
) -> tokend::daemon::server::RunningServer {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{token}\"\n\
         [database]\nurl = \"sqlite://{db}\"\n[security]\nkey_file = \"{key}\"\n\
         [[sites]]\nname = \"court_zxfw\"\ndriver = \"http\"\nlogin_url = \"http://127.0.0.1:9/login\"\n",
        db = dir.join("tokend.db").display(),
        key = dir.join("tokend.key").display(),
    );
    let config =
        tokend::Config::from_sources(Some(&text), &|_: &str| -> Option<String> { None }).unwrap();
    tokend::daemon::server::start(Arc::new(config))
        .await
        .unwrap()
}

#[actix_rt::test]
async fn with_an_admin_token_the_page_shows_only_the_prompt_until_given_it() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = "dashboard-admin-secret";
    let tokend = start_with_admin_token(dir.path(), token).await;
    let origin = format!("http://{}", tokend.addr);

    // The shell is public; the data is not.
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{origin}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let api = client
        .get(format!("{origin}/api/v1/automation/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    let url = format!("{origin}/");
    let browser = Browser::launch(&chromium);
    let (browser, shown) = in_browser(browser, move |b| {
        b.navigate(&url);
        b.wait_for(
            "the token prompt",
            "!document.getElementById('login').hidden",
            WAIT,
        );
        b.eval(
            "({app: document.getElementById('app').hidden, \
              sites: document.querySelectorAll('section.site').length, \
              stats: document.getElementById('stats').children.length, \
              logout: document.getElementById('logout').hidden, \
              visible: [...document.body.children].filter(e => e.getClientRects().length > 0) \
                  .map(e => e.id || e.tagName), \
              text: document.body.innerText})",
        )
    })
    .await;
    assert_eq!(shown["app"], true, "{shown}");
    assert_eq!(shown["sites"], 0, "{shown}");
    assert_eq!(shown["stats"], 0, "{shown}");
    assert_eq!(shown["visible"], json!(["HEADER", "login"]), "{shown}");
    let text = shown["text"].as_str().unwrap();
    assert!(text.contains("Admin token"), "{text}");
    assert!(
        !text.contains("court_zxfw"),
        "data shown before sign-in: {text}"
    );

    // A wrong token is refused on the spot; the right one opens the dashboard and stays in
    // this tab's session storage.
    let (browser, (refused, stored)) = in_browser(browser, move |b| {
        b.eval(
            "document.getElementById('login-token').value = 'wrong'; \
             document.querySelector('#login-form button').click(); true",
        );
        let refused = b.wait_for(
            "the refusal",
            "!document.getElementById('login-error').hidden && \
             document.getElementById('login-error').innerText",
            WAIT,
        );
        b.eval(&format!(
            "document.getElementById('login-token').value = '{token}'; \
             document.querySelector('#login-form button').click(); true"
        ));
        b.wait_for(
            "the dashboard after sign-in",
            "document.body.dataset.loaded === 'true' && \
             document.querySelector('section.site[data-site=\"court_zxfw\"]') !== null",
            WAIT,
        );
        (
            refused,
            b.eval("sessionStorage.getItem('tokend.admin_token')"),
        )
    })
    .await;
    assert!(
        refused.as_str().unwrap().contains("Invalid token"),
        "{refused}"
    );
    assert_eq!(stored, token);
    assert_stayed_local(&browser, &origin);
    assert_eq!(browser.page_errors(), Vec::<String>::new());
    drop(tokend.handle.stop(false));
}

/// A headless browser given the admin token in the address's fragment (`/#token=…`) opens the
/// dashboard without the prompt; the page drops the token from the address bar and the tab's
/// history at once. A wrong one is refused like a typed one.
#[actix_rt::test]
async fn a_token_in_the_fragment_opens_the_page_and_leaves_the_address() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = "dashboard-admin-secret";
    let tokend = start_with_admin_token(dir.path(), token).await;
    let origin = format!("http://{}", tokend.addr);

    let url = format!("{origin}/#token={token}");
    let (browser, shown) = in_browser(Browser::launch(&chromium), move |b| {
        b.navigate(&url);
        b.wait_for(
            "the dashboard without a prompt",
            "document.body.dataset.loaded === 'true' && \
             document.querySelector('section.site[data-site=\"court_zxfw\"]') !== null",
            WAIT,
        );
        let shown =
            b.eval("({href: location.href, login: document.getElementById('login').hidden})");
        // Replaced, not pushed: no entry of the tab's history holds the token.
        let entries = b.call("Page.getNavigationHistory", json!({}));
        (shown, entries)
    })
    .await;
    let (shown, entries) = shown;
    assert_eq!(shown["href"], format!("{origin}/"), "{shown}");
    // (`userTypedURL` is what the test typed, not an address the tab can go back to.)
    let urls: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        ["about:blank".to_string(), format!("{origin}/")],
        "{entries}"
    );
    assert_eq!(shown["login"], true, "{shown}");
    assert_stayed_local(&browser, &origin);
    assert_eq!(browser.page_errors(), Vec::<String>::new());

    let url = format!("{origin}/#token=wrong");
    let (_, refused) = in_browser(Browser::launch(&chromium), move |b| {
        b.navigate(&url);
        b.wait_for(
            "the refusal",
            "!document.getElementById('login').hidden && \
             !document.getElementById('login-error').hidden && location.hash === '' && \
             document.getElementById('login-error').innerText",
            WAIT,
        )
    })
    .await;
    assert!(refused.as_str().unwrap().contains("refused"), "{refused}");
    drop(tokend.handle.stop(false));
}

/// A derived site shows its parent's accounts, each with the derived token's countdown,
/// not "No account" beside "Usable 1 / 1".
#[actix_rt::test]
async fn a_derived_site_shows_its_parents_accounts_and_its_own_tokens() {
    let Some(chromium) = chromium() else { return };
    let court = court_portal::CourtPortal::start();
    let derived = format!(
        "[[sites]]\nname = \"derived\"\ndriver = \"derived\"\nfrom_site = \"court_zxfw\"\n\
         exchange_url = \"{}\"\nexchange_header = \"X-Parent-Token: {{token}}\"\n\
         token_pointer = \"/access_token\"\nexpires_in_pointer = \"/expires_in\"\n",
        court.url("/exchange")
    );
    let h = Harness::start(None, &derived).await;
    h.add_account("alice", "pw-alice", false);
    let (status, body) = h.acquire(json!({"site_name": "derived"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, tokens) = h
        .api_get("/api/v1/automation/tokens/status?site_name=derived")
        .await;
    assert_eq!(tokens["data"]["tokens"][0]["account"], "alice", "{tokens}");
    assert_eq!(tokens["data"]["tokens"][0]["source"], "cache", "{tokens}");

    let url = format!("http://{}/", h.tokend.addr);
    let (browser, text) = in_browser(Browser::launch(&chromium), move |b| {
        b.navigate(&url);
        b.wait_for(
            "alice under the derived site",
            "document.body.dataset.loaded === 'true' && document.querySelector(\
             'section.site[data-site=\"derived\"] tr[data-account=\"alice\"] .countdown') !== null",
            WAIT,
        );
        b.eval("document.querySelector('section.site[data-site=\"derived\"]').innerText")
    })
    .await;
    let text = text.as_str().unwrap();
    assert!(!text.contains("No account"), "{text}");
    assert!(text.contains("court_zxfw"), "the parent is named: {text}");
    assert!(
        text.contains("29m") || text.contains("28m"),
        "the derived token's countdown (1800 s): {text}"
    );
    assert_eq!(browser.page_errors(), Vec::<String>::new());
}

/// An account held by a job checkout shows who holds it (the job), since when, and the
/// lease's countdown.
#[actix_rt::test]
async fn a_checked_out_account_shows_its_job_and_lease() {
    let Some(chromium) = chromium() else { return };
    let h = Harness::start(None, "").await;
    h.add_account("alice", "pw-alice", false);
    let (status, body) = h
        .post(
            "checkout",
            json!({"site_name": "court_zxfw", "lease_seconds": 600, "job": "立案 2026-7"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = format!("http://{}/", h.tokend.addr);
    let (browser, text) = in_browser(Browser::launch(&chromium), move |b| {
        b.navigate(&url);
        b.wait_for(
            "alice's checkout",
            "document.querySelector('tr[data-account=\"alice\"] .checkout') !== null",
            WAIT,
        );
        b.eval("document.querySelector('tr[data-account=\"alice\"]').innerText")
    })
    .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("checked out") && text.contains("立案 2026-7"),
        "{text}"
    );
    assert!(
        text.contains("9m") || text.contains("10m"),
        "the lease's countdown: {text}"
    );
    assert_eq!(browser.page_errors(), Vec::<String>::new());
}

/// The series the page draws, without a browser: the minute's counts, each account's token
/// without the token, and an alert's firing and resolution in the day's log.
#[actix_rt::test]
async fn timeline_token_status_and_alert_history_answer_what_happened() {
    for redis in harness::backends() {
        timeline_token_status_and_alert_history_on(redis.as_deref()).await;
    }
}

async fn timeline_token_status_and_alert_history_on(redis: Option<&str>) {
    let h = Harness::start(redis, "[alerts]\nevaluate_interval = 0.2\n").await;
    let alice = h.add_account("alice", "pw-a", false);
    for _ in 0..2 {
        let (status, body) = h
            .acquire(json!({"site_name": "court_zxfw", "credential_id": alice}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, body) = h.api_get("/api/v1/automation/performance/timeline").await;
    assert_eq!(status, 200, "{body}");
    let points = body["data"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let successes: u32 = points
        .iter()
        .map(|p| p["successes"].as_u64().unwrap() as u32)
        .sum();
    let hits: u64 = points
        .iter()
        .map(|p| p["cache_hits"].as_u64().unwrap())
        .sum();
    assert_eq!(
        (successes, hits),
        (1, 1),
        "one login, one cache hit: {body}"
    );
    let login = points.iter().find(|p| p["logins"] == 1).unwrap();
    assert!(login["login_p95"].as_f64().unwrap() > 0.0, "{login}");

    let (status, body) = h
        .api_get("/api/v1/automation/tokens/status?site_name=court_zxfw")
        .await;
    assert_eq!(status, 200, "{body}");
    let token = &body["data"]["tokens"][0];
    assert_eq!(token["account"], "alice");
    assert_eq!(token["source"], "cache");
    assert_eq!(token["fresh"], true);
    assert!(token["seconds_left"].as_f64().unwrap() > 3500.0, "{token}");
    assert!(!body.to_string().contains("tok-"), "token material: {body}");
    let (status, _) = h
        .api_get("/api/v1/automation/tokens/status?site_name=nowhere")
        .await;
    assert_eq!(status, 404);

    // Alice's password is refused: the site has no usable account, an alert fires; the
    // unblock resolves it. Both transitions are in the log, newest first.
    h.portal.state.accept("alice", "other");
    h.tokend
        .state
        .broker
        .invalidate("court_zxfw", "alice")
        .await
        .unwrap();
    let (status, _) = h
        .acquire(json!({"site_name": "court_zxfw", "credential_id": alice}))
        .await;
    assert_eq!(status, 502);
    let transitions = |wanted: &'static str| {
        let h = &h;
        move || async move {
            let (_, body) = h
                .api_get("/api/v1/automation/performance/alerts/history")
                .await;
            let list = body["data"]["transitions"].as_array()?.clone();
            let first = list.first()?;
            (first["type"] == "no_available_account" && first["transition"] == wanted)
                .then_some(list)
        }
    };
    let fired = support::wait_until("the alert firing", WAIT, transitions("firing")).await;
    assert_eq!(fired[0]["severity"], "high", "{fired:?}");
    h.portal.state.accept("alice", "pw-a");
    let (status, _, _) = h
        .api_call(
            reqwest::Method::POST,
            "/api/v1/automation/accounts/unblock",
            Some(json!({"site_name": "court_zxfw", "account": "alice"})),
        )
        .await;
    assert_eq!(status, 200);
    let resolved = support::wait_until("the alert resolved", WAIT, transitions("resolved")).await;
    assert_eq!(resolved[1]["transition"], "firing", "{resolved:?}");
}
