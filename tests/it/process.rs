//! The process: drivers, the listening port, the `ringway` binary and its configuration
//! checks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringway::{Config, StartError};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

/// A `ringway` child process, killed when dropped.
pub(crate) struct Ringway {
    child: Child,
    pub(crate) addr: std::net::SocketAddr,
    log: Vec<String>,
}

impl Ringway {
    /// Runs the binary and waits for its "listening on" line.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Ringway {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut ringway = Ringway {
            child: command.spawn().expect("run ringway"),
            addr: ([0, 0, 0, 0], 0).into(),
            log: Vec::new(),
        };
        let mut lines = BufReader::new(ringway.child.stderr.take().unwrap()).lines();
        // Bounded: the start-up log is a handful of lines. A panic here kills the child
        // (Drop).
        for _ in 0..50 {
            let line = lines
                .next()
                .expect("ringway exited before listening")
                .unwrap();
            ringway.log.push(line.clone());
            if let Some(rest) = line.split(" listening on ").nth(1) {
                if line.contains("ringway ") {
                    ringway.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                    // Keep draining stderr so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines {});
                    return ringway;
                }
            }
        }
        panic!("no listening line in {:?}", ringway.log);
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this kernel lets a process set up io_uring, probed directly (not through
/// ringway, whose fallback to epoll could hide a broken io_uring path, nor through
/// monoio's detection, which `MONOIO_FORCE_LEGACY_DRIVER` turns off).
fn kernel_offers_io_uring() -> bool {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .is_ok()
}

#[test]
fn both_drivers_serve_streams() {
    let a = mock("a");
    let uring = kernel_offers_io_uring();
    if std::env::var_os("RINGWAY_REQUIRE_IO_URING").is_some() {
        assert!(
            uring,
            "RINGWAY_REQUIRE_IO_URING is set but io_uring cannot be set up"
        );
    }
    let forced_epoll = std::env::var("MONOIO_FORCE_LEGACY_DRIVER").as_deref() == Ok("1");
    let mut drivers = vec![("epoll", "epoll")];
    if uring {
        // Asked for, and chosen by "auto" unless the epoll fallback is forced.
        drivers.push(("io_uring", "io_uring"));
        drivers.push(("auto", if forced_epoll { "epoll" } else { "io_uring" }));
    } else {
        eprintln!("io_uring is not available on this machine: testing epoll only");
    }
    for (driver, runs_on) in drivers {
        let proxy = proxy(
            &[Ep::new("a", &a)],
            &format!("driver = \"{driver}\"\nshards = 2"),
            "",
        );
        assert_eq!(proxy.drivers(), [runs_on, runs_on], "driver = {driver}");
        let mut client = Client::connect(proxy.local_addr());
        let r = client.post_json(
            "/v1/chat/completions",
            &chat("llama3.2:latest", true),
            "X-Mock-Tokens: 5\r\nX-Mock-Token-Delay-Ms: 20\r\n",
        );
        assert_eq!(r.status, 200, "{driver}");
        assert!(
            r.complete && r.arrivals.len() >= 5,
            "{driver}: {} arrivals",
            r.arrivals.len()
        );
        let version = client.get("/version").json();
        assert_eq!(
            version["driver"], runs_on,
            "the page names the shard's driver"
        );
    }
}

#[test]
fn both_drivers_take_a_burst_of_connections() {
    // Connections opened back to back, each with its request sent at once: most wait in
    // the listen queue, and the accept loop takes them in bursts (one driver accept, then
    // plain accept() calls on the same socket). Every one must be served, on epoll too,
    // which needs the sockets accept() gives made non-blocking.
    let a = mock("a");
    let mut drivers = vec!["epoll"];
    if kernel_offers_io_uring() {
        drivers.push("io_uring");
    }
    let request = post("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    for driver in drivers {
        let proxy = proxy(&[Ep::new("a", &a)], &format!("driver = \"{driver}\""), "");
        let mut clients: Vec<Client> = (0..100)
            .map(|_| {
                let mut client = Client::connect(proxy.local_addr());
                client.send_raw(request.as_bytes());
                client
            })
            .collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let r = client.read_response(std::time::Instant::now(), false);
            assert_eq!(r.status, 200, "{driver}: connection {i}");
        }
        // Still keep-alive connections like any other.
        let r = clients[99].request(request.as_bytes());
        assert_eq!(r.status, 200, "{driver}: second request");
    }
}

#[test]
fn a_second_server_on_a_taken_port_fails_clearly() {
    let first = proxy(&[], "", "");
    let addr = first.local_addr();
    let text = format!("[server]\nlisten = \"{addr}\"\nshards = 2");
    match ringway::start(Config::from_toml(&text, "second").unwrap()) {
        Err(e @ StartError::AddrInUse(_)) => {
            assert!(e.to_string().contains("already in use"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second server silently shared {addr}"),
    }
    // The first one is unaffected.
    assert_eq!(
        one_shot(addr, b"GET /internal/health HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );

    let output = Command::new(BIN)
        .args(["--listen", &addr.to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn the_binary_runs_the_embedded_default() {
    let ringway = Ringway::spawn(&["--listen", "127.0.0.1:0", "--shards", "2"], &[]);
    let r = one_shot(
        ringway.addr,
        b"GET /internal/health HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // The default endpoints (local Ollama, LM Studio, vLLM, llama.cpp) are not running
    // here: a clear 502 naming what was tried, not a hang or a crash.
    let r = one_shot(
        ringway.addr,
        post("/v1/chat/completions", &chat("m", false), "").as_bytes(),
    );
    assert!(r.status == 502, "{} {}", r.status, r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local-ollama")
    );
}

#[test]
fn the_binary_honours_monoio_force_legacy_driver() {
    let ringway = Ringway::spawn(
        &["--listen", "127.0.0.1:0", "--shards", "1"],
        &[("MONOIO_FORCE_LEGACY_DRIVER", "1")],
    );
    assert!(
        ringway.log.iter().any(|l| l.contains("(epoll)")),
        "{:?}",
        ringway.log
    );
    let r = one_shot(
        ringway.addr,
        b"GET /internal/health HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn api_keys_and_an_endpoint_key_come_from_the_environment() {
    let mut config = MockConfig::named("locked");
    config.api_key = Some("backend-from-env".into());
    let locked = mock_with(config);
    let file = TempFile::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshards = 1\napi_keys_env = \"RINGWAY_TEST_KEYS\"\n\
         [[endpoints]]\nname = \"locked\"\nurl = \"http://{}\"\ntype = \"vllm\"\napi_key_env = \"RINGWAY_TEST_BACKEND_KEY\"\n",
        locked.addr()
    ));
    let ringway = Ringway::spawn(
        &["--config", file.0.to_str().unwrap()],
        &[
            ("RINGWAY_TEST_KEYS", "sk-env-1, sk-env-2"),
            ("RINGWAY_TEST_BACKEND_KEY", "backend-from-env"),
        ],
    );
    let chat_with = |auth: &str| {
        let r = one_shot(
            ringway.addr,
            post(
                "/v1/chat/completions",
                &chat("llama3.2:latest", false),
                auth,
            )
            .as_bytes(),
        );
        (r.status, r.text())
    };
    assert_eq!(chat_with("").0, 401);
    assert_eq!(chat_with("Authorization: Bearer sk-env-3\r\n").0, 401);
    // Both keys from the variable open the door, and the endpoint (which wants its own
    // key, on the model list too) answers once its models are known.
    for key in ["sk-env-1", "sk-env-2"] {
        let auth = format!("Authorization: Bearer {key}\r\n");
        let served = eventually(Duration::from_secs(5), || chat_with(&auth).0 == 200);
        assert!(served, "{key}: {:?}", chat_with(&auth));
    }
}

#[test]
fn check_config_names_the_file_and_key() {
    let bad =
        TempFile::new("[server]\nlisten = \"127.0.0.1:1\"\n[proxy]\nbalancer = \"fastest\"\n");
    let output = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&bad.0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&*bad.0.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("proxy.balancer"), "{stderr}");

    let typo = TempFile::new("[server]\nlisten = \"127.0.0.1:1\"\nshard = 2\n");
    let output = Command::new(BIN)
        .arg("--check-config")
        .arg("-c")
        .arg(&typo.0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shard"));

    let good = TempFile::new(ringway::DEFAULT_CONFIG);
    let output = Command::new(BIN)
        .arg("--check-config")
        .arg("-c")
        .arg(&good.0)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("4 endpoint(s)"));

    let output = Command::new(BIN)
        .args(["--check-config", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));
}

#[test]
fn stopping_the_server_closes_its_listener() {
    let server = proxy(&[], "shards = 2", "");
    let addr = server.local_addr();
    assert_eq!(
        one_shot(addr, b"GET /internal/health HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    server.shutdown();
    assert!(eventually(Duration::from_secs(2), || {
        std::net::TcpStream::connect(addr).is_err()
    }));
}

#[test]
fn sigterm_lets_a_stream_finish_then_exits_0() {
    let a = mock("a");
    let config = TempFile::new(&config_text(&[Ep::new("a", &a)], "", ""));
    let mut ringway = Ringway::spawn(&["--config", config.0.to_str().unwrap()], &[]);
    let addr = ringway.addr;
    let streaming = std::thread::spawn(move || {
        Client::connect(addr).post_json(
            "/v1/chat/completions",
            &chat("llama3.2:latest", true),
            "X-Mock-Tokens: 20\r\nX-Mock-Token-Delay-Ms: 50\r\n",
        )
    });
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/internal/health").status, 200);
    std::thread::sleep(Duration::from_millis(300)); // the stream is under way
    let pid = ringway.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // No new connections; the idle one is closed; the stream completes.
    assert!(eventually(Duration::from_secs(2), || {
        std::net::TcpStream::connect(addr).is_err()
    }));
    assert!(idle.is_closed(Duration::from_secs(2)));
    let r = streaming.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete, "the stream was cut");
    assert!(r.text().contains("[DONE]"));
    let mut exit = None;
    assert!(eventually(Duration::from_secs(5), || {
        exit = ringway.child.try_wait().unwrap();
        exit.is_some()
    }));
    assert_eq!(exit.unwrap().code(), Some(0));
}

#[test]
fn the_access_log_has_a_line_per_request() {
    let a = mock("a");
    let log = TempFile::new("");
    let extra = format!(
        "[log]\naccess = \"json\"\naccess_path = \"{}\"",
        log.0.display()
    );
    let proxy = proxy(&[Ep::new("a", &a)], "", &extra);
    let mut client = Client::connect(proxy.local_addr());
    let r = client.request(
        post(
            "/v1/chat/completions",
            &chat("llama3.2:latest", false),
            "X-Request-ID: trace-1\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(client.get("/nowhere").status, 404);
    assert_eq!(client.get("/internal/health").status, 200); // internal pages are not logged
    let mut lines = Vec::new();
    assert!(eventually(Duration::from_secs(2), || {
        lines = std::fs::read_to_string(&log.0)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.len() >= 2
    }));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["request_id"], "trace-1");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions");
    assert_eq!(first["model"], "llama3.2:latest");
    assert_eq!(first["endpoint"], "a");
    assert_eq!(first["status"], 200);
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["sticky"], "miss");
    assert!(first["bytes"].as_u64().unwrap() > 100);
    assert!(first["ms"].as_f64().unwrap() >= first["ttfb_ms"].as_f64().unwrap());
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (second["status"].as_u64(), second["endpoint"].is_null()),
        (Some(404), true)
    );
}

/// Reads the access log until it has `n` lines (bounded).
fn log_lines(log: &TempFile, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    eventually(Duration::from_secs(3), || {
        lines = std::fs::read_to_string(&log.0)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.len() >= n
    });
    lines
}

#[test]
fn requests_refused_while_they_are_read_are_logged_too() {
    let a = mock("a");
    let log = TempFile::new("");
    let extra = format!(
        "[log]\naccess = \"json\"\naccess_path = \"{}\"",
        log.0.display()
    );
    let server = "max_body_bytes = 64\nmax_header_bytes = 1024\nheader_timeout_ms = 300";
    let proxy = proxy(&[Ep::new("a", &a)], server, &extra);
    let addr = proxy.local_addr();
    let big_body = post("/v1/chat/completions", &"x".repeat(100), "");
    let big_head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let cases: [(&[u8], u16); 3] = [
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (big_body.as_bytes(), 413),
        (big_head.as_bytes(), 431),
    ];
    for (raw, status) in cases {
        assert_eq!(one_shot(addr, raw).status, status);
    }
    // A head that never completes: 408 at header_timeout.
    let mut slow = Client::connect(addr);
    let sent = std::time::Instant::now();
    let r = slow.request(b"GET /v1/models HTTP/1.1\r\nHo");
    assert_eq!(r.status, 408);
    let lines = log_lines(&log, 4);
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 413, 431, 408], "{lines:?}");
    // What was read of each is in its line: the 413's head was, the others' were not.
    assert_eq!(lines[1]["method"], "POST");
    assert_eq!(lines[1]["path"], "/v1/chat/completions");
    assert_eq!(lines[0]["method"], "-");
    assert!(
        lines
            .iter()
            .all(|l| !l["request_id"].as_str().unwrap().is_empty())
    );
    // Its time runs from the connection's opening: the client held it that long.
    let held = lines[3]["ms"].as_f64().unwrap();
    assert!(
        held >= 250.0 && held <= sent.elapsed().as_secs_f64() * 1000.0 + 50.0,
        "{held}"
    );
}

#[test]
fn an_access_log_that_cannot_be_opened_is_named_as_such() {
    let text = format!(
        "{}\n[log]\naccess = \"text\"\naccess_path = \"/nonexistent-ringway-dir/access.log\"",
        config_text(&[], "", "")
    );
    let config = Config::from_toml(&text, "test").unwrap();
    match ringway::start(config) {
        Err(e @ StartError::AccessLog(..)) => {
            let shown = e.to_string();
            assert!(
                shown.contains("log.access_path") && shown.contains("/nonexistent-ringway-dir"),
                "{shown}"
            );
            assert!(!shown.contains("shard"), "{shown}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without its access log"),
    }
}
