//! A captcha handed to a person (SPEC §13), answered on the dashboard (SPEC §14) in headless
//! Chromium: the page lists the pending challenge with its image, the answer typed into its
//! box reaches the login program, and the login completes.
//!
//! Needs Chromium (Debian package `chromium`): skipped without it, failed in CI.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support;
use crate::support::browser::{find_chromium, Browser};
use crate::support::harness::Harness;
use crate::support::portal::Portal;

const WAIT: Duration = Duration::from_secs(20);

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

#[actix_rt::test]
async fn a_pending_captcha_is_shown_on_the_dashboard_and_answered_there() {
    let found = find_chromium();
    if !support::require("Chromium", found.is_some()) {
        return;
    }
    let chromium = found.unwrap();
    let portal = Portal::start();
    *portal.state.captcha_text.lock().unwrap() = Some("x7k2".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/captcha_handoff_login.py"
    );
    let extra = format!(
        "[[sites]]\nname = \"court_captcha\"\ndriver = \"command\"\n\
         command = [\"{script}\", \"--captcha-url\", \"{}\", \"--login-url\", \"{}\"]\n",
        portal.url("/captcha"),
        portal.login_url()
    );
    let retry = "[retry]\nlogin_timeout = 10\ncaptcha_answer_timeout = 60\n";
    let prefix = format!("tokend-test-{}", support::unique());
    let h = Harness::builder()
        .prefix(&prefix)
        .portal(portal)
        .retry(retry)
        .extra(&extra)
        .start()
        .await;
    h.add_account_on("court_captcha", "alice", "pw-a", false);

    let acquire_url = format!("http://{}/api/v1/automation/tokens/acquire", h.tokend.addr);
    let client = h.client.clone();
    let acquisition = actix_web::rt::spawn(async move {
        let answer = client
            .post(acquire_url)
            .json(&json!({"site_name": "court_captcha"}))
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap(),
        )
    });
    support::wait_until("a pending captcha", WAIT, || async {
        let (_, body) = h.api_get("/api/v1/automation/captchas").await;
        (body["data"]["captchas"].as_array()?.len() == 1).then_some(())
    })
    .await;

    let url = format!("http://{}/", h.tokend.addr);
    let (browser, text) = in_browser(Browser::launch(&chromium), move |b| {
        b.navigate(&url);
        // Listed with its image, which the page's CSP lets load (a 1×1 PNG).
        b.wait_for(
            "the captcha with its image",
            "document.querySelectorAll('#captcha-list .captcha').length === 1 && \
             document.querySelector('#captcha-list .captcha img') !== null && \
             document.querySelector('#captcha-list .captcha img').naturalWidth === 1",
            WAIT,
        );
        let text = b.eval("document.querySelector('#captcha-list .captcha').innerText");
        b.eval(
            "(() => { const c = document.querySelector('#captcha-list .captcha'); \
              c.querySelector('input').value = 'x7k2'; c.querySelector('button').click(); \
              return true; })()",
        );
        text
    })
    .await;
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains("court_captcha / alice"), "{text}");
    assert!(text.contains("Type the characters"), "{text}");

    let (status, body) = acquisition.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["token"], "tok-alice-1-0123456789abcdef");
    let (browser, ()) = in_browser(browser, |b| {
        b.wait_for(
            "the answered captcha to leave the page",
            "document.getElementById('captchas').hidden === true",
            WAIT,
        );
    })
    .await;
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );
}
