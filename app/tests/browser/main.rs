//! The application in a real headless Chromium, driven over WebDriver: log in, add two
//! platforms, switch between them, revoke another browser's session, a forged post from
//! another origin refused, log out; every page screenshotted (desktop and a 390 px phone) into
//! `$RATATOSKR_ARTIFACTS` (default `test-artifacts/` at the repository root); every page, in
//! each of its states, checked with axe-core's WCAG 2.1 A/AA rules.

mod axe;
#[path = "../api/helpers.rs"]
mod helpers;
mod webdriver;

use std::path::PathBuf;

use axum::response::Html;
use helpers::{PASSWORD, TestApp, spawn_app};
use webdriver::{Browser, Driver};

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("RATATOSKR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

async fn shot(b: &Browser, name: &str) {
    b.screenshot(&artifacts().join(format!("{name}.png"))).await;
}

async fn full_shot(b: &Browser, name: &str, width: u32, height: u32) {
    b.full_screenshot(&artifacts().join(format!("{name}.png")), width)
        .await;
    b.set_window(width, height).await;
}

/// The browser's address for the app. Chromium treats http://127.0.0.1 as a secure context,
/// so the `Secure`, `__Host-` cookie is accepted over plain HTTP there.
fn base(app: &TestApp) -> String {
    app.address.clone()
}

async fn login(b: &Browser, app: &TestApp, name: &str) {
    b.goto(&format!("{}/login", base(app))).await;
    b.fill("#login-username", name).await;
    b.fill("#login-password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_url("the dashboard", |u| !u.contains("/login")).await;
}

/// A page on another origin that auto-submits a form against the app, with a valid CSRF token
/// copied from the victim's page (the Fetch-Metadata check refuses it anyway).
async fn evil_site(bind: &str, target: String, token: String) -> String {
    let page = format!(
        "<!doctype html><html><body><h1>You won a prize</h1>\
         <form id=f method=post action=\"{target}/platforms\">\
         <input name=csrf_token value=\"{token}\">\
         <input name=platform_type value=mastodon><input name=name value=Forged>\
         <input name=instance_url value=\"https://forged.example\"><input name=username value=evil>\
         <input name=access_token value=forged-token></form>\
         <script>document.getElementById('f').submit()</script></body></html>"
    );
    let router =
        axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .expect("bind the other origin");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/")
}

/// Add a short-named and a long-named platform through the form, and make the second active.
async fn add_two_platforms(b: &Browser, app: &TestApp) {
    for (name, url, t) in [
        ("Toots", "https://toot.example", "mastodon"),
        (
            "A rather long platform name for phones",
            "https://pixelfed.a-very-long-instance-name.example",
            "pixelfed",
        ),
    ] {
        b.goto(&format!("{}/platforms", base(app))).await;
        b.exec(&format!("document.getElementById('pf-type').value = '{t}'"))
            .await;
        b.fill("#pf-name", name).await;
        b.fill("#pf-url", url).await;
        b.fill("#pf-user", "alice").await;
        b.fill("#pf-token", "tok-xyz").await;
        b.click("#add-submit").await;
        b.wait_text("#flash", &format!("Connected {name}")).await;
    }
    b.click("li[data-platform-id='2'] button.btn-primary").await;
    b.wait_url("the dashboard", |u| !u.contains("/platforms"))
        .await;
}

async fn platform_count(app: &TestApp) -> usize {
    let alice = app.state.db.user_by_name("alice").await.unwrap().unwrap();
    app.state.db.platforms(alice.id).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_switches_platforms_revokes_a_device_and_logs_out() {
    let app = spawn_app().await;
    app.create_user("alice", false).await;
    let mut driver = Driver::start().await;
    let a = driver.browser(1280, 900).await;

    // Visitors land on the login page.
    a.goto(&format!("{}/", base(&app))).await;
    let u = a.wait_url("the login page", |u| u.contains("/login")).await;
    assert!(u.contains("reason=login_required"), "{u}");
    shot(&a, "01-login").await;

    // A wrong password shows the error in the page.
    a.fill("#login-username", "alice").await;
    a.fill("#login-password", "wrong password").await;
    a.click("#login-submit").await;
    a.wait_text("#login-error", "Wrong user name or password")
        .await;
    shot(&a, "02-login-error").await;

    login(&a, &app, "alice").await;
    assert!(a.source().await.contains("Hello, alice"));
    // The one cookie: __Host-, Secure, HttpOnly, SameSite=Lax, accepted over http://127.0.0.1.
    let cookies = a.cookies().await;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0].name(), "__Host-ratatoskr");
    assert_eq!(cookies[0].secure(), Some(true));
    assert_eq!(cookies[0].http_only(), Some(true));
    assert_eq!(
        cookies[0].same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax")
    );
    assert!(
        a.exec("return document.cookie")
            .await
            .as_str()
            .unwrap()
            .is_empty(),
        "HttpOnly"
    );
    shot(&a, "03-dashboard-empty").await;

    // Add two platforms through the form; a bad URL first.
    a.goto(&format!("{}/platforms", base(&app))).await;
    a.fill("#pf-name", "Toots").await;
    // type=url would refuse this in the browser; remove it to see the server's answer.
    a.exec("document.getElementById('pf-url').type = 'text'")
        .await;
    a.fill("#pf-url", "http://toot.example").await;
    a.fill("#pf-user", "alice").await;
    a.fill("#pf-token", "tok-toots-123").await;
    a.click("#add-submit").await;
    a.wait_text("#form-error", "https://").await;
    shot(&a, "04-platform-error").await;
    a.exec("document.getElementById('pf-url').type = 'text'")
        .await;
    a.fill("#pf-url", "https://toot.example").await;
    a.fill("#pf-token", "tok-toots-123").await;
    a.click("#add-submit").await;
    a.wait_text("#flash", "Connected Toots").await;
    a.exec("document.getElementById('pf-type').value = 'pixelfed'")
        .await;
    a.fill("#pf-name", "Photos").await;
    a.fill("#pf-url", "https://pix.example").await;
    a.fill("#pf-user", "alice_pics").await;
    a.fill("#pf-token", "tok-photos-456").await;
    a.click("#add-submit").await;
    a.wait_text("#flash", "Connected Photos").await;
    assert_eq!(platform_count(&app).await, 2);
    shot(&a, "05-platforms").await;

    // Switch from the platforms page, then with the dashboard's switcher.
    a.click("li[data-platform-id='1'] button.btn-primary").await;
    a.wait_url("the dashboard", |u| !u.contains("/platforms"))
        .await;
    a.wait_text("#flash", "Switched to Toots").await;
    a.wait_text("#active-platform", "Toots").await;
    shot(&a, "06-dashboard-toots").await;
    a.exec("document.getElementById('switch-to').value = '2'")
        .await;
    a.click("#switch-submit").await;
    a.wait_text("#flash", "Switched to Photos").await;
    a.wait_text("#active-platform", "Photos").await;
    // And with the keyboard-free script path: changing the select submits by itself.
    a.exec("var s = document.getElementById('switch-to'); s.value = '1'; s.dispatchEvent(new Event('change'))").await;
    a.wait_text("#active-platform", "Toots").await;
    a.wait_url("the dashboard", |u| !u.contains("/platforms/"))
        .await;
    shot(&a, "07-dashboard-switched").await;

    // A second browser logs in as alice; the first revokes it.
    let b = driver.browser(1280, 900).await;
    login(&b, &app, "alice").await;
    a.goto(&format!("{}/sessions", base(&app))).await;
    assert_eq!(
        a.exec("return document.querySelectorAll('#session-list > li').length")
            .await,
        2
    );
    shot(&a, "08-sessions").await;
    a.click("#session-list li:not(.current) button.revoke")
        .await;
    a.wait_text("#flash", "Session revoked").await;
    assert_eq!(
        a.exec("return document.querySelectorAll('#session-list > li').length")
            .await,
        1
    );
    b.goto(&format!("{}/platforms", base(&app))).await;
    let u = b.wait_url("the login page", |u| u.contains("/login")).await;
    assert!(u.contains("login_required"), "{u}");
    shot(&b, "09-revoked-browser-at-login").await;

    // A page on another origin posts a form against the app: refused, nothing changes.
    a.goto(&format!("{}/platforms", base(&app))).await;
    let token = a
        .exec("return document.querySelector('input[name=csrf_token]').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let same_site = evil_site("127.0.0.1:0", base(&app), token.clone()).await;
    a.goto(&same_site).await;
    a.wait_url("the forged post's answer", |u| u.starts_with(&base(&app)))
        .await;
    let page = a.source().await;
    assert!(
        page.contains("Forbidden")
            && page.contains("cross_site_request")
            && page.contains("Nothing was changed"),
        "{page}"
    );
    shot(&a, "10-forged-post-refused").await;
    let cross_site = evil_site("127.0.0.2:0", base(&app), token).await;
    a.goto(&cross_site).await;
    a.wait_url("the forged post's answer", |u| u.starts_with(&base(&app)))
        .await;
    let page = a.source().await;
    assert!(page.contains("Forbidden"), "{page}");
    assert_eq!(platform_count(&app).await, 2, "no forged platform");
    a.goto(&format!("{}/", base(&app))).await;
    assert!(a.source().await.contains("Hello, alice"), "still logged in");

    // Log out.
    a.click("#logout").await;
    let u = a.wait_url("the login page", |u| u.contains("/login")).await;
    assert!(u.contains("logged_out"), "{u}");
    a.wait_text("#notice", "logged out").await;
    assert!(a.cookies().await.is_empty(), "the cookie is gone");
    shot(&a, "11-logged-out").await;
    a.quit().await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_reads_well_on_a_desktop_and_a_phone() {
    let app = spawn_app().await;
    app.create_user("root", true).await;
    app.create_user("alice", false).await;
    let mut driver = Driver::start().await;
    let phone = driver.browser(390, 844).await;
    login(&phone, &app, "alice").await;
    let admin = driver.browser(1280, 900).await;
    login(&admin, &app, "root").await;
    // Some data for the pages and charts.
    add_two_platforms(&phone, &app).await;
    ratatoskr_app::analytics::sample(&app.state).await.unwrap();

    let pages = [
        ("dashboard", "/"),
        ("platforms", "/platforms"),
        ("sessions", "/sessions"),
    ];
    for (name, path) in pages {
        phone.goto(&format!("{}{path}", base(&app))).await;
        let overflow = phone
            .exec("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await
            .as_i64()
            .unwrap();
        assert!(
            overflow <= 0,
            "{path} overflows a 390px phone by {overflow}px"
        );
        full_shot(&phone, &format!("phone-{name}"), 390, 844).await;
        admin.goto(&format!("{}{path}", base(&app))).await;
        full_shot(&admin, &format!("desktop-{name}"), 1280, 900).await;
    }
    admin.goto(&format!("{}/admin", base(&app))).await;
    assert!(admin.has("#chart-active").await && admin.has("#chart-devices").await);
    assert_eq!(admin.text("#health-status").await, "ok");
    full_shot(&admin, "desktop-admin", 1280, 900).await;
    let admin_on_phone = driver.browser(390, 844).await;
    login(&admin_on_phone, &app, "root").await;
    admin_on_phone.goto(&format!("{}/admin", base(&app))).await;
    let overflow = admin_on_phone
        .exec("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await
        .as_i64()
        .unwrap();
    assert!(
        overflow <= 0,
        "/admin overflows a 390px phone by {overflow}px"
    );
    full_shot(&admin_on_phone, "phone-admin", 390, 844).await;

    // Keyboard: Tab reaches the skip link first, then the navigation, with a visible focus ring.
    admin.goto(&format!("{}/", base(&app))).await;
    admin.press_tab().await;
    let focused = admin.exec("return document.activeElement.className").await;
    assert_eq!(focused, "skip");
    admin.press_tab().await;
    admin.press_tab().await;
    let outline = admin
        .exec("return getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_eq!(outline, "solid", "a visible focus outline");
    shot(&admin, "desktop-keyboard-focus").await;

    // The login page on a phone, at http://localhost (the address `serve` prints): the
    // Secure, __Host- cookie is accepted there too.
    let visitor = driver.browser(390, 844).await;
    let localhost = base(&app).replace("127.0.0.1", "localhost");
    visitor.goto(&format!("{localhost}/login")).await;
    full_shot(&visitor, "phone-login", 390, 844).await;
    visitor.fill("#login-username", "alice").await;
    visitor.fill("#login-password", PASSWORD).await;
    visitor.click("#login-submit").await;
    visitor
        .wait_url("the dashboard", |u| !u.contains("/login"))
        .await;
    assert!(visitor.source().await.contains("Hello, alice"));
    let cookies = visitor.cookies().await;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0].secure(), Some(true));
    for b in [phone, admin, admin_on_phone, visitor] {
        b.quit().await;
    }
}

/// axe-core's findings, page by page.
#[derive(Default)]
struct Accessibility {
    report: String,
    blocking: usize,
    pages: usize,
}

impl Accessibility {
    /// Run axe on what `b` shows now, named `page` in the report.
    async fn check(&mut self, b: &Browser, page: &str) {
        let found = axe::violations(b).await;
        self.pages += 1;
        self.blocking += found.iter().filter(|v| v.blocks()).count();
        if !found.is_empty() {
            self.report += &format!("{page} ({}):\n", b.url().await);
            for v in &found {
                self.report += &v.to_string();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_has_no_serious_or_critical_wcag_2_1_aa_violation() {
    let app = spawn_app().await;
    app.create_user("root", true).await;
    let mut driver = Driver::start().await;
    let b = driver.browser(1280, 900).await;
    let mut axe = Accessibility::default();
    let page = |path: &str| format!("{}{path}", base(&app));

    // Visitors: the login page, with a notice, with an error; a page that does not exist.
    b.goto(&page("/login")).await;
    axe.check(&b, "login").await;
    b.goto(&page("/login?reason=logged_out")).await;
    axe.check(&b, "login with a notice").await;
    b.fill("#login-username", "root").await;
    b.fill("#login-password", "wrong password").await;
    b.click("#login-submit").await;
    b.find("#login-error").await;
    axe.check(&b, "login with an error").await;
    b.goto(&page("/no-such-page")).await;
    axe.check(&b, "not found, logged out").await;

    // An administrator with data: every page of the navigation.
    login(&b, &app, "root").await;
    axe.check(&b, "dashboard, no platform").await;
    b.goto(&page("/platforms")).await;
    axe.check(&b, "platforms, none yet").await;
    add_two_platforms(&b, &app).await;
    b.find("#flash").await;
    axe.check(&b, "dashboard with a flash and the switcher")
        .await;
    ratatoskr_app::analytics::sample(&app.state).await.unwrap();
    for (name, path) in [
        ("platforms", "/platforms"),
        ("sessions", "/sessions"),
        ("admin", "/admin"),
        ("not found, logged in", "/no-such-page"),
    ] {
        b.goto(&page(path)).await;
        axe.check(&b, name).await;
    }
    // The form's own error, and the refusal page for a post with a forged token.
    b.goto(&page("/platforms")).await;
    b.exec("document.getElementById('pf-url').type = 'text'")
        .await;
    b.fill("#pf-name", "Bad").await;
    b.fill("#pf-url", "http://plain.example").await;
    b.fill("#pf-user", "alice").await;
    b.fill("#pf-token", "tok").await;
    b.click("#add-submit").await;
    b.find("#form-error").await;
    axe.check(&b, "platforms with a form error").await;
    b.exec(
        "const form = document.getElementById('add-submit').form; \
         form.elements.csrf_token.value = 'forged'; form.submit()",
    )
    .await;
    b.wait_url("the refusal", |u| u.ends_with("/platforms"))
        .await;
    b.find("#error-message").await;
    axe.check(&b, "refusal page").await;
    // The navigation and the forms wrap on a 390 px phone: the same pages again there.
    b.set_window(390, 844).await;
    for (name, path) in [
        ("dashboard, phone", "/"),
        ("platforms, phone", "/platforms"),
        ("sessions, phone", "/sessions"),
        ("admin, phone", "/admin"),
        ("not found, phone", "/no-such-page"),
    ] {
        b.goto(&page(path)).await;
        axe.check(&b, name).await;
    }

    println!(
        "axe-core {}: {} page views, WCAG 2.1 A/AA\n{}",
        axe::AXE_VERSION,
        axe.pages,
        if axe.report.is_empty() {
            "no violation"
        } else {
            &axe.report
        }
    );
    assert_eq!(
        axe.blocking, 0,
        "serious or critical WCAG 2.1 A/AA violations:\n{}",
        axe.report
    );
    b.quit().await;
}
