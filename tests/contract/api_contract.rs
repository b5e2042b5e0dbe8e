//! Issue 16, item 11: the OpenAPI document against the server that serves it. schemathesis (the
//! pinned version `make test` installs into .dev/venv) generates requests from
//! `/api/v1/openapi.json` — ones the document allows and ones it forbids, stateful sequences, methods
//! it does not list — and judges every answer with all of its checks. It must find nothing. The
//! few settings that depart from its defaults are in tests/contract/schemathesis.toml, each with
//! its reason.

use std::process::Command;
use std::sync::Arc;

use agora::payments::gateway::{SimulatedGateway, Simulation};

use crate::support::api::Api;
use crate::support::fixtures;
use crate::support::app::TestAppOptions;
use crate::support::TestApp;

#[test]
fn schemathesis_finds_nothing_between_the_openapi_document_and_the_api() {
    let schemathesis = std::env::var("AGORA_SCHEMATHESIS")
        .expect("AGORA_SCHEMATHESIS is not set: run the tests with `make test`, which installs schemathesis into .dev/venv");
    let mut options = TestAppOptions::new(Arc::new(SimulatedGateway::new(Simulation::always_succeeding(), Default::default())));
    // The generator makes up thousands of tokens from one address; guessing is limited in
    // tests/it/trust.rs, not here, where a 429 would hide what the made-up token was answered.
    options.chat_rate.misses = u32::MAX;
    let app = TestApp::spawn_with(options);
    // A merchant's staff member, whose token the run uses.
    let mut conn = app.conn();
    let staff = fixtures::user(&mut conn, "contract@agora.test");
    fixtures::merchant(&mut conn, "Contract Goods", &[staff]);
    let token = Api::signed_in(&app.url, "contract@agora.test").token().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/schemathesis.toml");
    // A fixed seed: the same requests on every run (AGORA_SCHEMATHESIS_SEED explores others).
    let seed = std::env::var("AGORA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "160016".into());
    let output = Command::new(&schemathesis)
        .args(["--config-file", config, "run", &format!("{}/api/v1/openapi.json", app.url)])
        // One worker: Debian 12's Python (3.11.2) breaks when several threads parse Python source at
        // once ("AST constructor recursion depth mismatch", CPython gh-106905), which schemathesis's
        // generator does with --workers 2.
        .args(["--checks", "all", "--max-examples", "30", "--workers", "1", "--seed", &seed, "--no-color"])
        // `--checks all` enables every check whatever the config file says: the one the config
        // turns off (and says why) is named here too.
        .args(["--exclude-checks", "ensure_resource_availability"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {schemathesis}: {e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    // Its own summary, kept short: the failures' requests can be megabytes of generated text.
    let summary: String = report.lines().filter(|l| l.chars().count() < 400).collect::<Vec<_>>().join("\n");
    assert!(output.status.success(), "schemathesis found problems (seed {seed}):\n{summary}\n{}", String::from_utf8_lossy(&output.stderr));
    // Every route of every table and the document itself, but for the one excluded (revoking the
    // run's own token).
    let operations = agora::web::openapi::all_routes(&agora::app::api_tables()).len() + 1 - 1;
    assert!(report.contains(&format!("Tested: {operations}")), "every operation but the one excluded was tested:\n{summary}");
}
