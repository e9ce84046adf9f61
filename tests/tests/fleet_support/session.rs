//! A console session as a browser holds it, for the HTTP-level tests: logged in through the
//! API, its cookie and CSRF token; redirects are not followed, so a test sees the 303s.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The `name=value` of the response's (first) `Set-Cookie`; panics without one.
pub fn set_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

/// The login form's CSRF token in the login page's HTML; panics without one.
pub fn login_form_token(html: &str) -> String {
    html.split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("login form token")
        .to_owned()
}

/// A logged-in session: its cookie, its CSRF token and what `/api/v1/auth/login` answered.
pub struct Session {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: String,
    pub csrf: String,
    pub me: Value,
}

impl Session {
    /// Logs in; panics unless it succeeds.
    pub async fn login(base: &str, user: &str, password: &str) -> Session {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"user": user, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200, "login {user}");
        let cookie = set_cookie(&r);
        let me: Value = r.json().await.expect("json");
        Session {
            http,
            base: base.to_owned(),
            cookie,
            csrf: me["csrf_token"].as_str().expect("csrf").to_owned(),
            me,
        }
    }

    /// A request with the cookie (and no CSRF token).
    pub fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(m, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
    }

    /// A request with the cookie and the CSRF token in its header.
    pub fn csrf(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.req(m, path).header("x-csrf-token", &self.csrf)
    }

    /// The status of a GET.
    pub async fn status(&self, path: &str) -> StatusCode {
        self.req(Method::GET, path)
            .send()
            .await
            .expect("get")
            .status()
    }

    /// A GET's status and body.
    pub async fn page(&self, path: &str) -> (StatusCode, String) {
        let r = self.req(Method::GET, path).send().await.expect("get");
        (r.status(), r.text().await.expect("text"))
    }

    /// A form POST as the browser sends it (CSRF token in the form unless `csrf` is false).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> reqwest::Response {
        let mut f: Vec<(&str, &str)> = fields.to_vec();
        if csrf {
            f.push(("csrf_token", &self.csrf));
        }
        self.req(Method::POST, path)
            .form(&f)
            .send()
            .await
            .expect("post")
    }

    /// A form POST with the CSRF token: status and body.
    pub async fn post_text(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self.post(path, fields, true).await;
        (r.status(), r.text().await.expect("text"))
    }
}
