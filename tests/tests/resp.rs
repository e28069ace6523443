//! The Redis protocol on the gateway, against a 3-node in-process cluster:
//! raw RESP (pipelining, RESP3, tokens, a hostile header), then the real
//! tools: `redis-cli` round trips, `redis-benchmark -t set,get,mset -P 16`
//! with no error, and redis-py's own usage (pool, pipeline, `SET EX`, `MGET`).
//!
//! The tools come from Debian's `redis-tools` and PyPI's `redis`; `.ci/run`
//! installs both. Without one, its test says what is missing and passes
//! without running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use shoal_gateway::GatewayHandle;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::fetch;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn spec() -> Spec {
    Spec {
        nodes: 3,
        anti_entropy: false,
        ..Spec::default()
    }
}

async fn resp_gateway(
    c: &Cluster,
    customize: impl FnOnce(&mut shoal_node::config::Config),
) -> (GatewayHandle, SocketAddr) {
    let gw = c
        .start_gateway("gateway-resp", |g| {
            g.gateway.resp_listen = "127.0.0.1:0".into();
            customize(g)
        })
        .await;
    let addr = gw.resp_addr().expect("resp_listen set");
    (gw, addr)
}

/// A reply as a client library decodes it.
#[derive(Debug, Clone, PartialEq)]
enum R {
    Ok(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<R>),
    Map(Vec<(R, R)>),
}

fn bulk(s: &str) -> R {
    R::Bulk(s.as_bytes().to_vec())
}

/// A raw RESP connection.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = stream.into_split();
        Conn {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn send(&mut self, commands: &[&[&[u8]]]) {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.writer.write_all(&out).await.expect("send");
    }

    async fn call(&mut self, args: &[&[u8]]) -> R {
        self.send(&[args]).await;
        self.reply().await
    }

    async fn reply(&mut self) -> R {
        tokio::time::timeout(T, self.read())
            .await
            .expect("a reply in time")
    }

    fn read(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = R> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("read");
            assert!(line.ends_with("\r\n"), "truncated reply {line:?}");
            let body = line[1..line.len() - 2].to_string();
            match line.as_bytes()[0] {
                b'+' => R::Ok(body),
                b'-' => R::Err(body),
                b':' => R::Int(body.parse().unwrap()),
                b'_' => R::Nil,
                b'$' | b'=' => {
                    let n: i64 = body.parse().unwrap();
                    if n < 0 {
                        return R::Nil;
                    }
                    let mut data = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut data).await.unwrap();
                    data.truncate(n as usize);
                    R::Bulk(data)
                }
                b'*' => {
                    let n: i64 = body.parse().unwrap();
                    if n < 0 {
                        return R::Nil;
                    }
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.read().await);
                    }
                    R::Array(items)
                }
                b'%' => {
                    let n: usize = body.parse().unwrap();
                    let mut pairs = Vec::new();
                    for _ in 0..n {
                        let k = self.read().await;
                        let v = self.read().await;
                        pairs.push((k, v));
                    }
                    R::Map(pairs)
                }
                other => panic!("unknown reply type {:?} in {line:?}", other as char),
            }
        })
    }

    /// True once the server has closed the connection.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(2 * T, self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

fn is_err(r: &R, prefix: &str) -> bool {
    matches!(r, R::Err(e) if e.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelines_and_protocol_versions() {
    let c = Cluster::start(spec()).await;
    let (gw, addr) = resp_gateway(&c, |_| {}).await;
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.call(&[b"PING"]).await, R::Ok("PONG".into()));
    assert_eq!(conn.call(&[b"SET", b"a", b"1"]).await, R::Ok("OK".into()));
    assert_eq!(conn.call(&[b"GET", b"a"]).await, bulk("1"));
    assert_eq!(conn.call(&[b"GET", b"missing"]).await, R::Nil);
    assert_eq!(
        conn.call(&[b"MSET", b"b", b"2", b"c", b"3"]).await,
        R::Ok("OK".into())
    );
    assert_eq!(
        conn.call(&[b"MGET", b"a", b"b", b"nope", b"c"]).await,
        R::Array(vec![bulk("1"), bulk("2"), R::Nil, bulk("3")])
    );
    assert_eq!(
        conn.call(&[b"EXISTS", b"a", b"nope", b"b"]).await,
        R::Int(2)
    );
    assert_eq!(conn.call(&[b"DEL", b"a", b"nope"]).await, R::Int(1));
    assert_eq!(conn.call(&[b"GET", b"a"]).await, R::Nil);
    // SET supersedes whatever versions the key had: one value after it.
    let mut http = c.client();
    for v in ["x", "y"] {
        let r = http
            .request("PUT", "/v1/kv/b", &[], v.as_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        http.request("GET", "/v1/kv/b", &[], b"")
            .await
            .unwrap()
            .status,
        300,
        "two blind HTTP writes make siblings"
    );
    assert_eq!(conn.call(&[b"SET", b"b", b"z"]).await, R::Ok("OK".into()));
    let r = http.request("GET", "/v1/kv/b", &[], b"").await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"z"[..]));

    // Errors in Redis's words; the connection goes on.
    assert_eq!(
        conn.call(&[b"FLUSHALL"]).await,
        R::Err("ERR unknown command 'flushall', with args beginning with: ".into())
    );
    assert_eq!(
        conn.call(&[b"GET"]).await,
        R::Err("ERR wrong number of arguments for 'get' command".into())
    );
    assert!(is_err(
        &conn.call(&[b"SET", b"k", b"v", b"NX"]).await,
        "ERR SET NX"
    ));
    assert!(is_err(
        &conn.call(&[b"MULTI"]).await,
        "ERR MULTI is not supported"
    ));

    // TTLs: SET EX, TTL, EXPIRE, PERSIST, and expiry itself.
    assert_eq!(
        conn.call(&[b"SET", b"t", b"v", b"EX", b"100"]).await,
        R::Ok("OK".into())
    );
    assert!(matches!(conn.call(&[b"TTL", b"t"]).await, R::Int(99..=100)));
    assert_eq!(conn.call(&[b"PERSIST", b"t"]).await, R::Int(1));
    assert_eq!(conn.call(&[b"TTL", b"t"]).await, R::Int(-1));
    assert_eq!(conn.call(&[b"TTL", b"never"]).await, R::Int(-2));
    assert_eq!(conn.call(&[b"PEXPIRE", b"t", b"300"]).await, R::Int(1));
    assert_eq!(conn.call(&[b"GET", b"t"]).await, bulk("v"));
    let until = std::time::Instant::now() + T;
    while conn.call(&[b"GET", b"t"]).await != R::Nil {
        assert!(
            std::time::Instant::now() < until,
            "t did not expire in {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(conn.call(&[b"EXISTS", b"t"]).await, R::Int(0));
    assert_eq!(
        http.request("GET", "/v1/kv/t", &[], b"")
            .await
            .unwrap()
            .status,
        404,
        "expired over HTTP too"
    );

    // A pipeline: 200 commands in one write, answers in order, and a GET
    // after a SET of the same key in the pipeline sees it.
    let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("p{i}").into_bytes()).collect();
    let mut commands: Vec<Vec<&[u8]>> = Vec::new();
    for k in &keys {
        commands.push(vec![b"SET", k, k]);
        commands.push(vec![b"GET", k]);
    }
    let refs: Vec<&[&[u8]]> = commands.iter().map(Vec::as_slice).collect();
    conn.send(&refs).await;
    for k in &keys {
        assert_eq!(conn.reply().await, R::Ok("OK".into()));
        assert_eq!(conn.reply().await, R::Bulk(k.clone()));
    }

    // The causal view: every sibling and a context that supersedes them.
    http.request("PUT", "/v1/kv/s", &[], b"one").await.unwrap();
    http.request("PUT", "/v1/kv/s", &[], b"two").await.unwrap();
    let R::Array(got) = conn.call(&[b"SHOAL.GET", b"s"]).await else {
        panic!("SHOAL.GET answers an array")
    };
    let (R::Bulk(context), R::Array(mut values)) = (got[0].clone(), got[1].clone()) else {
        panic!("context and values: {got:?}")
    };
    values.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(values, vec![bulk("one"), bulk("two")]);
    assert!(matches!(
        conn.call(&[b"SHOAL.PUT", b"s", &context, b"three"]).await,
        R::Bulk(_)
    ));
    assert_eq!(
        conn.call(&[b"SHOAL.GET", b"s"]).await,
        R::Array(vec![
            match conn.call(&[b"SHOAL.GET", b"s"]).await {
                R::Array(a) => a[0].clone(),
                other => panic!("{other:?}"),
            },
            R::Array(vec![bulk("three")])
        ])
    );
    assert!(
        is_err(
            &conn.call(&[b"SHOAL.PUT", b"other", &context, b"x"]).await,
            "ERR"
        ),
        "a context opens only for the key it was read from"
    );

    // RESP3 after HELLO 3: a map, and nil as `_`.
    let R::Map(hello) = conn.call(&[b"HELLO", b"3"]).await else {
        panic!("HELLO 3 answers a map")
    };
    assert!(hello.contains(&(bulk("proto"), R::Int(3))));
    assert_eq!(conn.call(&[b"GET", b"missing"]).await, R::Nil);
    assert_eq!(conn.call(&[b"QUIT"]).await, R::Ok("OK".into()));
    assert!(conn.closed().await);

    // Counted as HTTP requests are.
    let metrics = fetch(gw.http_addr(), "GET", "/metrics", &[], b"")
        .await
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("shoal_gateway_requests_total{op=\"put\",code=\"204\"}"))
        .unwrap_or_else(|| panic!("no put counted:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 100.0, "{line}");
    gw.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_cost_nothing_and_close_the_connection() {
    let c = Cluster::start(spec()).await;
    let (gw, addr) = resp_gateway(&c, |_| {}).await;
    for attack in [
        &b"*1000000\r\n"[..],
        b"*1\r\n$1000000000000\r\n",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*-\r\n",
    ] {
        let mut conn = Conn::open(addr).await;
        conn.writer.write_all(attack).await.unwrap();
        let reply = conn.reply().await;
        assert!(
            is_err(&reply, "ERR Protocol error"),
            "{attack:?}: {reply:?}"
        );
        assert!(conn.closed().await, "{attack:?} leaves the connection open");
    }
    // A header that promises a huge command and never sends it holds no
    // memory for it and is closed once the request timeout passes.
    let mut conn = Conn::open(addr).await;
    conn.writer
        .write_all(b"*1000\r\n$1000\r\nab")
        .await
        .unwrap();
    assert!(conn.closed().await, "a stalled command is closed");
    // The gateway still serves.
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.call(&[b"PING"]).await, R::Ok("PONG".into()));
    gw.shutdown().await;
    c.shutdown().await;
}

fn write_tokens(path: &Path) {
    shoal_tests::tokens::write_tokens(
        path,
        &[
            ("reader", "tok-read", &["read"]),
            ("app", "tok-rw", &["read", "write"]),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_proved_with_auth_and_checked_per_command() {
    let c = Cluster::start(spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    write_tokens(&file);
    let f = file.clone();
    let (gw, addr) = resp_gateway(&c, move |g| g.security.tokens_file = Some(f)).await;
    let mut conn = Conn::open(addr).await;
    assert_eq!(
        conn.call(&[b"PING"]).await,
        R::Err("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        conn.call(&[b"GET", b"k"]).await,
        R::Err("NOAUTH Authentication required.".into())
    );
    assert!(is_err(&conn.call(&[b"AUTH", b"wrong"]).await, "WRONGPASS"));
    assert_eq!(conn.call(&[b"AUTH", b"tok-read"]).await, R::Ok("OK".into()));
    assert_eq!(conn.call(&[b"GET", b"k"]).await, R::Nil);
    assert!(is_err(&conn.call(&[b"SET", b"k", b"v"]).await, "NOPERM"));
    // AUTH user token, and HELLO 3 AUTH user token, as clients send them.
    assert_eq!(
        conn.call(&[b"AUTH", b"default", b"tok-rw"]).await,
        R::Ok("OK".into())
    );
    assert_eq!(conn.call(&[b"SET", b"k", b"v"]).await, R::Ok("OK".into()));
    let mut fresh = Conn::open(addr).await;
    assert!(matches!(
        fresh
            .call(&[b"HELLO", b"3", b"AUTH", b"default", b"tok-rw"])
            .await,
        R::Map(_)
    ));
    assert_eq!(fresh.call(&[b"GET", b"k"]).await, bulk("v"));
    gw.shutdown().await;
    c.shutdown().await;
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a tool with a bound on its time; its output.
fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cli(path: &Path, addr: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new(path);
    command
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args);
    // Exit status aside: redis-cli exits 1 on an error reply, which some
    // of these calls expect.
    let out = run(command);
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_and_redis_benchmark() {
    let (Some(redis_cli), Some(benchmark)) = (on_path("redis-cli"), on_path("redis-benchmark"))
    else {
        eprintln!("SKIPPED: redis-cli or redis-benchmark not found (Debian redis-tools; .ci/run installs it)");
        return;
    };
    let c = Cluster::start(spec()).await;
    let (gw, addr) = resp_gateway(&c, |_| {}).await;
    let (cli_path, addr2) = (redis_cli.clone(), addr);
    let cli = move |args: &'static [&'static str]| {
        let p = cli_path.clone();
        tokio::task::spawn_blocking(move || cli(&p, addr2, args))
    };
    assert_eq!(cli(&["PING"]).await.unwrap(), "PONG");
    assert_eq!(
        cli(&["SET", "greeting", "hello world"]).await.unwrap(),
        "OK"
    );
    assert_eq!(cli(&["GET", "greeting"]).await.unwrap(), "hello world");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]).await.unwrap(), "OK");
    assert_eq!(cli(&["MGET", "a", "b", "c"]).await.unwrap(), "1\n2");
    assert_eq!(cli(&["DEL", "a", "c"]).await.unwrap(), "1");
    assert_eq!(cli(&["EXISTS", "a"]).await.unwrap(), "0");
    assert_eq!(cli(&["SET", "t", "v", "EX", "60"]).await.unwrap(), "OK");
    assert!(["59", "60"].contains(&cli(&["TTL", "t"]).await.unwrap().as_str()));
    assert!(cli(&["NOSUCH"])
        .await
        .unwrap()
        .starts_with("ERR unknown command 'nosuch'"));

    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(benchmark);
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get,mset",
            "-n",
            "2000",
            "-c",
            "8",
            "-P",
            "16",
            "-r",
            "1000",
            "-q",
        ]);
        run(command)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("ERR") && !stderr.contains("rror") && !stderr.contains("WARNING"),
        "redis-benchmark saw errors or warnings: {stdout}\n{stderr}"
    );
    for test in ["SET", "GET", "MSET"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(test) && l.contains("requests per second")),
            "no {test} result: {stdout}"
        );
    }
    // What it wrote reads back (values of 3 bytes of 'x').
    let mut http = c.client();
    let page = http
        .request("GET", "/v1/buckets/default/keys?limit=10000", &[], b"")
        .await
        .unwrap();
    let keys = page.json().unwrap()["keys"].as_array().unwrap().len();
    assert!(keys > 100, "only {keys} keys listed after the benchmark");
    gw.shutdown().await;
    c.shutdown().await;
}

const REDIS_PY: &str = r#"
import sys, time, redis
port, token = int(sys.argv[1]), sys.argv[2]
pool = redis.ConnectionPool(host="127.0.0.1", port=port, password=token, max_connections=4)
r = redis.Redis(connection_pool=pool)
assert r.ping()
assert r.set("py:a", "1")
assert r.get("py:a") == b"1"
p = r.pipeline(transaction=False)
for i in range(50):
    p.set(f"py:{i}", str(i))
p.get("py:7")
out = p.execute()
assert out[:50] == [True] * 50 and out[50] == b"7", out
assert r.mget("py:1", "py:nope", "py:2") == [b"1", None, b"2"]
assert r.set("py:ttl", "v", ex=1)
assert 0 < r.ttl("py:ttl") <= 1
time.sleep(1.3)
assert r.get("py:ttl") is None
assert r.delete("py:a") == 1
assert r.exists("py:a") == 0
r3 = redis.Redis(host="127.0.0.1", port=port, password=token, protocol=3)
assert r3.get("py:3") == b"3"
try:
    redis.Redis(host="127.0.0.1", port=port).get("py:3")
    raise SystemExit("no token: should fail")
except redis.exceptions.AuthenticationError:
    pass
print("redis-py ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_pool_pipeline_ttl_and_mget() {
    let python = on_path("python3");
    let has_module = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let (Some(python), true) = (python, has_module) else {
        eprintln!(
            "SKIPPED: python3 with the redis package not found (.ci/run installs it from PyPI)"
        );
        return;
    };
    let c = Cluster::start(spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    write_tokens(&file);
    let f = file.clone();
    let (gw, addr) = resp_gateway(&c, move |g| g.security.tokens_file = Some(f)).await;
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.args(["-c", REDIS_PY, &port, "tok-rw"]);
        run(command)
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("redis-py ok"),
        "redis-py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.shutdown().await;
    c.shutdown().await;
}
