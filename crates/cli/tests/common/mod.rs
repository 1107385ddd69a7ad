//! What the tests that run `veil serve` as a process of its own share: starting it on a fresh
//! data directory, and the users they act as.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub(crate) fn veil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veil"))
}

/// `veil init` of a data directory under `root`: the directory and the admin's token.
pub(crate) fn init(root: &Path) -> (PathBuf, String) {
    let data = root.join("data");
    let token_file = root.join("admin.token");
    let out = veil()
        .arg("init")
        .arg("--data-dir")
        .arg(&data)
        .arg("--admin-token-file")
        .arg(&token_file)
        .output()
        .expect("init");
    assert!(out.status.success());
    (data, std::fs::read_to_string(&token_file).expect("token").trim().to_owned())
}

/// Starts `veil serve` on `data`: the child and its URL.
pub(crate) fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[])
}

/// [`serve`] with more of `veil serve`'s options.
pub(crate) fn serve_with(data: &Path, options: &[&str]) -> (Child, String) {
    let mut child = veil()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(options)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let url = listening(&mut child);
    (child, url)
}

/// The URL a `veil serve` started with its stdout piped says it listens on, from its first line.
pub(crate) fn listening(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf8");
    first.strip_prefix("Veil is listening on ").expect("banner").split(' ').next().expect("url").to_owned()
}

/// Creates the departments `departments` names and a user with `role` in each of `users`
/// (id, department, role), as the admin; the users' tokens by id.
pub(crate) async fn people(
    url: &str,
    admin: &str,
    departments: &[(&str, &str)],
    users: &[(&str, &str, &str)],
) -> std::collections::HashMap<String, String> {
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let request = client.post(format!("{url}{path}")).bearer_auth(admin).json(&body);
        async move { request.send().await.expect("send") }
    };
    for (id, name) in departments {
        assert!(
            post("/v1/departments".into(), serde_json::json!({"id": id, "name": name})).await.status().is_success()
        );
    }
    let mut tokens = std::collections::HashMap::new();
    for (user, department, role) in users {
        let body = serde_json::json!({"id": user, "department": department, "roles": [role]});
        assert!(post("/v1/users".into(), body).await.status().is_success());
        let issued: serde_json::Value =
            post(format!("/v1/users/{user}/tokens"), serde_json::json!({})).await.json().await.expect("token");
        tokens.insert((*user).to_owned(), issued["token"].as_str().expect("token").to_owned());
    }
    tokens
}

/// Registers `bytes` with `metadata` as `token`, a multipart upload as a steward's client sends
/// it.
pub(crate) fn register(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    metadata: &serde_json::Value,
    bytes: Vec<u8>,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let form = reqwest::multipart::Form::new()
        .part("metadata", reqwest::multipart::Part::text(metadata.to_string()))
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name("data"));
    client.post(format!("{url}/v1/datasets")).bearer_auth(token).multipart(form).send()
}
