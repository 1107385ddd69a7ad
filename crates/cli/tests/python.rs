//! The Python client's tests (`clients/python/tests`), run with pytest against this build's
//! `veil serve --demo --flight-listen`: ADBC's Flight SQL driver, pyarrow's Flight client and
//! the `veil-client` package, in the virtualenv `clients/python/setup-venv` makes (from PyPI, on
//! the first run only).

use std::path::Path;
use std::process::Command;

#[test]
fn python_clients_query_over_flight_sql() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/python");
    let setup = Command::new(root.join("clients/python/setup-venv")).arg(&venv).output().expect("run setup-venv");
    assert!(
        setup.status.success(),
        "clients/python/setup-venv failed (python3 with venv and pip, and PyPI, are needed):\n{}{}",
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );
    let out = Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("clients/python/tests"))
        .env("VEIL_BIN", env!("CARGO_BIN_EXE_veil"))
        .current_dir(&root)
        .output()
        .expect("run pytest");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client's tests failed:\n{report}");
    assert!(report.contains(" passed"), "pytest ran no test:\n{report}");
}
