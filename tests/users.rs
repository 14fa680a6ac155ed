//! Users: a radiologist signs in with a password (session cookie), a machine client has its own
//! API token; both reach DICOMweb; wrong passwords, forged and truncated tokens, expired or
//! unknown sessions and oversized input answer 401 and are on record; disabling a user stops
//! their token and session with the next request. The users are made with the CLI.

use std::io::Write;
use std::process::{Command, Stdio};

use firstread_e2e::*;

fn cli(node: &TestNode, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(firstread_bin())
        .args(args)
        .env("FIRSTREAD_DATABASE__URL", &node.db.url)
        .env("FIRSTREAD_LOG__FILTER", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("firstread");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("firstread output");
    assert!(out.status.success(), "firstread {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_in_machines_use_tokens_and_disabling_stops_both() {
    // users only: no shared token
    let node = TestNode::start_roles(firstread::Roles { listen: true, work: false }, |c| c.http.token = None).await;
    let password = "a long enough passphrase";
    cli(&node, &["user", "add", "alice", "--role", "radiologist", "--password-stdin"], Some(&format!("{password}\n")));
    cli(&node, &["user", "add", "ris", "--role", "service"], None);
    let token = cli(&node, &["user", "token", "ris", "--label", "the RIS"], None).trim().to_owned();
    assert!(token.starts_with("fr_") && token.len() == 46, "{token}");
    let listed = cli(&node, &["user", "list"], None);
    assert!(listed.contains("alice") && listed.contains("radiologist") && listed.contains("ris"), "{listed}");

    let root = format!("http://{}", node.node.http_addr.expect("HTTP"));
    let qido = format!("{root}/dicom-web/studies");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let status = |r: reqwest::Response| r.status().as_u16();

    // the machine's token
    assert_eq!(status(http.get(&qido).bearer_auth(&token).send().await.expect("qido")), 200);
    // forged, truncated, the test token of other nodes, an oversized header: 401
    let forged = format!("fr_{}", "A".repeat(43));
    let truncated = &token[..20];
    let huge = "x".repeat(16 * 1024);
    for bad in [forged.as_str(), truncated, TEST_TOKEN, huge.as_str()] {
        let r = http.get(&qido).bearer_auth(bad).send().await.expect("qido");
        assert!(matches!(r.status().as_u16(), 401 | 431), "token {}...: {}", &bad[..bad.len().min(8)], r.status());
    }

    // the person: a wrong password, then the right one
    let sign_in = |name: &str, password: &str| {
        http.post(format!("{root}/sign-in")).form(&[("name", name), ("password", password), ("next", "/triage")]).send()
    };
    assert_eq!(status(sign_in("alice", "not the password").await.expect("sign-in")), 401);
    assert_eq!(status(sign_in("mallory", password).await.expect("sign-in")), 401);
    assert_eq!(status(sign_in("ris", "").await.expect("sign-in")), 401, "a service user has no password");
    let r = sign_in("alice", password).await.expect("sign-in");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/triage");
    let cookie = r.headers()["set-cookie"].to_str().expect("cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let with_session = |url: &str, c: &str| http.get(url).header("cookie", c).send();
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 200);
    assert_eq!(status(with_session(&format!("{root}/triage"), &session).await.expect("triage")), 200);
    assert_eq!(status(with_session(&qido, "firstread_session=made-up").await.expect("qido")), 401);
    // without a session the triage page sends the browser to sign in
    let r = http.get(format!("{root}/triage")).send().await.expect("triage");
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap_or_default()), (303, "/sign-in"));

    // an expired session
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&node.pool)
        .await
        .expect("expire");
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 401, "expired");
    let r = sign_in("alice", password).await.expect("sign-in");
    let session = r.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("kv").to_owned();
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 200);
    // a new password ends the sessions; the old one no longer signs in
    let new_password = "another long passphrase";
    assert!(cli(&node, &["user", "password", "alice"], Some(&format!("{new_password}\n"))).contains("sessions ended"));
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 401, "sessions end with a new password");
    assert_eq!(status(sign_in("alice", password).await.expect("sign-in")), 401);
    let r = sign_in("alice", new_password).await.expect("sign-in");
    let session = r.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("kv").to_owned();
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 200);
    let password = new_password;

    // a revoked token stops; a new one works
    assert!(cli(&node, &["user", "revoke-tokens", "ris"], None).contains("1 token(s)"));
    assert_eq!(status(http.get(&qido).bearer_auth(&token).send().await.expect("qido")), 401, "revoked");
    let token = cli(&node, &["user", "token", "ris"], None).trim().to_owned();
    assert_eq!(status(http.get(&qido).bearer_auth(&token).send().await.expect("qido")), 200);
    // a sign-in form posted from another site is refused
    let r = http
        .post(format!("{root}/sign-in"))
        .header("origin", "https://elsewhere.example")
        .form(&[("name", "alice"), ("password", password)])
        .send()
        .await
        .expect("sign-in");
    assert_eq!(r.status().as_u16(), 403);

    // disabled: the token and the session stop at once
    cli(&node, &["user", "disable", "alice"], None);
    cli(&node, &["user", "disable", "ris"], None);
    assert_eq!(status(with_session(&qido, &session).await.expect("qido")), 401);
    assert_eq!(status(http.get(&qido).bearer_auth(&token).send().await.expect("qido")), 401);
    assert_eq!(status(sign_in("alice", password).await.expect("sign-in")), 401, "a disabled user cannot sign in");

    // on record: who did what, the refused sign-ins by the name tried, no secrets
    let recorded = eventually_async(std::time::Duration::from_secs(10), || async {
        node.count(
            "SELECT count(*) FROM audit_events WHERE actor = 'alice' AND action = 'login' AND outcome = 'failure'",
        )
        .await
            >= 2
    })
    .await;
    assert!(recorded, "alice's refused sign-ins recorded");
    assert!(
        node.count(
            "SELECT count(*) FROM audit_events WHERE actor = 'ris' AND action = 'query' AND outcome = 'success'"
        )
        .await
            >= 1
    );
    assert!(
        node.count(
            "SELECT count(*) FROM audit_events WHERE actor = 'alice' AND action = 'query' AND outcome = 'success'"
        )
        .await
            >= 1
    );
    assert!(node.count("SELECT count(*) FROM audit_events WHERE actor = 'mallory' AND outcome = 'failure'").await >= 1);
    let leaked = node
        .count(&format!(
            "SELECT count(*) FROM audit_events WHERE detail::text LIKE '%{}%' OR detail::text LIKE '%passphrase%'",
            &token[3..20]
        ))
        .await;
    assert_eq!(leaked, 0, "no token or password in the audit trail");
    // the changes made with the CLI, and the node's start with its configuration
    let changes: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'command' FROM audit_events WHERE action = 'configure' AND detail ? 'command' ORDER BY id",
    )
    .fetch_all(&node.pool)
    .await
    .expect("audit");
    assert_eq!(
        changes,
        [
            "user add",
            "user add",
            "user token",
            "user password",
            "user revoke-tokens",
            "user token",
            "user disable",
            "user disable"
        ]
    );
    assert_eq!(
        node.count(
            "SELECT count(*) FROM audit_events WHERE action = 'configure' AND detail->>'event' = 'node started'"
        )
        .await,
        1
    );

    // password guessing from one address: after 10 failures in 15 minutes, 429 with Retry-After,
    // even for the right password; on record as failed sign-ins
    cli(&node, &["user", "enable", "alice"], None);
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(status(sign_in("alice", "a wrong guess").await.expect("sign-in")));
    }
    let first_429 = codes.iter().position(|c| *c == 429).expect("throttled");
    assert!(codes[..first_429].iter().all(|c| *c == 401) && codes[first_429..].iter().all(|c| *c == 429), "{codes:?}");
    // ten failures in the window from this address, the earlier ones of this test included (a
    // success does not clear them)
    assert!((1..=10).contains(&first_429), "at most ten failures allowed: {codes:?}");
    let r = sign_in("alice", password).await.expect("sign-in");
    assert_eq!(r.status().as_u16(), 429, "the right password waits too");
    let retry: u64 = r.headers()["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((1..=900).contains(&retry), "{retry}");
}

/// `X-Forwarded-*` count only from `http.trusted_proxies`: from anyone else a forged
/// `X-Forwarded-For` changes neither the address on record nor the one throttled, and a forged
/// `X-Forwarded-Proto: https` no Secure flag; behind a trusted proxy the client it names is the
/// one recorded and throttled, and its HTTPS makes the cookie Secure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let password = "a long enough passphrase";
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for trusted in [false, true] {
        let node = TestNode::start_roles(firstread::Roles { listen: true, work: false }, |c| {
            c.http.token = None;
            if trusted {
                c.http.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
            }
        })
        .await;
        firstread_users::add(&node.pool, "carol", firstread_users::Role::Radiologist, Some(password), &[])
            .await
            .expect("user");
        let root = format!("http://{}", node.node.http_addr.expect("HTTP"));
        let sign_in = |client: &'static str, pass: &'static str| {
            http.post(format!("{root}/sign-in"))
                .header("x-forwarded-for", format!("198.51.100.1, {client}"))
                .header("x-forwarded-proto", "https")
                .form(&[("name", "carol"), ("password", pass)])
                .send()
        };
        let ok = sign_in("203.0.113.9", password).await.expect("sign-in");
        assert_eq!(ok.status().as_u16(), 303);
        let cookie = ok.headers()["set-cookie"].to_str().expect("cookie").to_owned();
        assert_eq!(cookie.contains("Secure"), trusted, "{cookie}");
        // ten failures from one client: that client waits; another behind the same proxy does not
        let mut last = 0;
        for _ in 0..11 {
            last = sign_in("203.0.113.9", "a wrong guess").await.expect("sign-in").status().as_u16();
        }
        assert_eq!(last, 429);
        let other = sign_in("203.0.113.10", "a wrong guess").await.expect("sign-in").status().as_u16();
        assert_eq!(other, if trusted { 401 } else { 429 }, "untrusted: every forged client is the one peer");
        let recorded = eventually_async(std::time::Duration::from_secs(10), || async {
            node.count("SELECT count(*) FROM audit_events WHERE action = 'login' AND address LIKE '203.0.113.9:%'")
                .await
                >= 1
        })
        .await;
        assert_eq!(recorded, trusted, "the forwarded client is on record only behind a trusted proxy");
    }
}
