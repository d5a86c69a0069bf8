//! STOMP protocol edge cases over a raw TCP socket against the real listener, in process.

use std::sync::Arc;
use std::time::Duration;

use berth_core::engine::{spec_with_defaults, GetMessages, PolicyValues};
use berth_core::model::User;
use berth_core::store::Store;
use berth_core::{Engine, SystemClock};
use berth_server::stomp::frame::Limits;
use berth_server::stomp::{serve, StompContext};
use berth_store::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const PASSCODE: &str = "s3cret";

struct Rig {
    addr: std::net::SocketAddr,
    engine: Arc<Engine>,
    sqlite: Arc<SqliteStore>,
    tenancy_id: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn rig_with(idle_timeout: Duration, max_connections: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let store: Arc<dyn Store> = sqlite.clone();
    let tenancy = store.ensure_tenancy("acme", "ocid1.tenancy.oc1..acme").await.unwrap();
    let user = User {
        id: "ocid1.user.oc1..bob".into(),
        tenancy_id: tenancy.id.clone(),
        name: "bob".into(),
        fingerprint: "ff".into(),
        public_key_der: Vec::new(),
        stomp_passcode_sha256: berth_server::credentials::passcode_sha256(PASSCODE),
    };
    store.insert_user(&user).await.unwrap();
    let shutdown = CancellationToken::new();
    let engine =
        Arc::new(Engine::new(store.clone(), Arc::new(SystemClock), "iad".into(), shutdown.clone()).await.unwrap());
    let auth = berth_server::auth::Authenticator::new(store, Arc::new(SystemClock));
    let ctx = Arc::new(StompContext {
        engine: engine.clone(),
        auth: Arc::new(auth),
        metrics: Default::default(),
        limits: Limits::default(),
        idle_timeout,
        max_connections,
        tls: None,
        logins: Default::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, ctx, shutdown.clone()));
    Rig { addr, engine, sqlite, tenancy_id: tenancy.id, shutdown, _dir: dir }
}

async fn rig() -> Rig {
    rig_with(Duration::from_secs(60), 64).await
}

impl Rig {
    async fn queue(&self) -> String {
        let spec = spec_with_defaults("q".into(), self.tenancy_id.clone(), PolicyValues::default()).unwrap();
        self.engine.create_queue(&self.tenancy_id, spec, None).await.unwrap().resources[0].identifier.clone()
    }

    /// A connection that has sent nothing yet.
    async fn raw(&self) -> Client {
        Client(TcpStream::connect(self.addr).await.unwrap())
    }

    /// Every message of the queue, oldest first, leased for a minute.
    async fn drain(&self, queue_id: &str) -> Vec<String> {
        let mut contents = Vec::new();
        loop {
            let params = GetMessages::new(Some(60), Some(0), Some(20), None, false).unwrap();
            let got = self.engine.get_messages(&self.tenancy_id, queue_id, params).await.unwrap();
            if got.is_empty() {
                return contents;
            }
            contents.extend(got.into_iter().map(|d| d.message.content));
        }
    }

    async fn connect(&self, extra: &str) -> Client {
        let mut client = self.raw().await;
        client.send(&format!("CONNECT\naccept-version:1.2\nlogin:acme/bob\npasscode:{PASSCODE}\n{extra}\n\0")).await;
        let connected = client.frame().await;
        assert!(connected.starts_with("CONNECTED\n"), "{connected}");
        client
    }
}

struct Client(TcpStream);

impl Client {
    async fn send(&mut self, bytes: &str) {
        self.0.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// The next frame (up to its NUL) as text; skips heart-beats.
    async fn frame(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut byte = [0u8];
            let n = tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut byte))
                .await
                .expect("frame in time")
                .unwrap();
            assert_eq!(n, 1, "connection closed; got so far: {:?}", String::from_utf8_lossy(&out));
            match byte[0] {
                0 => return String::from_utf8_lossy(&out).into_owned(),
                b'\n' if out.is_empty() => continue,
                b => out.push(b),
            }
        }
    }

    /// Asserts the server closes the connection soon.
    async fn closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.0.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "connection still open");
    }
}

fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame.lines().take_while(|l| !l.is_empty()).find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

async fn expect_error_and_close(client: &mut Client, mentions: &str) {
    let frame = client.frame().await;
    assert!(frame.starts_with("ERROR\n"), "{frame}");
    assert!(frame.to_lowercase().contains(mentions), "ERROR does not mention {mentions:?}: {frame}");
    client.closed().await;
}

#[tokio::test]
async fn wrong_passcode_gets_an_error_and_the_connection_closes() {
    let r = rig().await;
    let mut c = r.raw().await;
    c.send("CONNECT\naccept-version:1.2\nlogin:acme/bob\npasscode:nope\n\n\0").await;
    expect_error_and_close(&mut c, "login failed").await;
}

#[tokio::test]
async fn first_frame_must_be_connect() {
    let r = rig().await;
    let mut c = r.raw().await;
    c.send("SEND\ndestination:q\n\nx\0").await;
    expect_error_and_close(&mut c, "connect").await;
}

#[tokio::test]
async fn send_with_receipt_is_stored_before_the_receipt() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!("SEND\ndestination:{q}/orders\nreceipt:77\n\nhello\0")).await;
    let receipt = c.frame().await;
    assert_eq!(header(&receipt, "receipt-id"), Some("77"), "{receipt}");
    let params = GetMessages::new(None, Some(0), Some(5), Some("orders".into()), false).unwrap();
    let got = r.engine.get_messages(&r.tenancy_id, &q, params).await.unwrap();
    assert_eq!(got[0].message.content, "hello");
}

#[tokio::test]
async fn oversized_frames_headers_and_bodies_are_refused_with_an_error() {
    let r = rig().await;
    let q = r.queue().await;
    let too_many: String = (0..65).map(|i| format!("h{i}:v\n")).collect();
    let cases = [
        (format!("SEND\ndestination:{q}\n\n{}\0", "x".repeat(1024 * 1024 + 1)), "limit"),
        (format!("SEND\ndestination:{q}\n{too_many}\nx\0"), "headers"),
        (format!("SEND\ndestination:{q}\ncontent-length:131073\n\n{}\0", "x".repeat(131_073)), "body"),
        ("BEGIN\ntransaction:t1\n\n\0".to_string(), "transaction"),
        ("FLY\n\n\0".to_string(), "unknown command"),
        (format!("SEND\ndestination:{q}\ntransaction:t1\n\nx\0"), "transaction"),
    ];
    for (frame, mentions) in cases {
        let mut c = r.connect("").await;
        // The server may close before reading everything; a write error is fine then.
        let _ = c.0.write_all(frame.as_bytes()).await;
        expect_error_and_close(&mut c, mentions).await;
    }
}

#[tokio::test]
async fn non_utf8_header_is_refused() {
    let r = rig().await;
    let mut c = r.connect("").await;
    c.0.write_all(b"SEND\ndestination:\xff\xfe\n\nx\0").await.unwrap();
    expect_error_and_close(&mut c, "utf-8").await;
}

#[tokio::test]
async fn another_tenancy_s_queue_looks_like_a_missing_one() {
    let r = rig().await;
    let mut c = r.connect("").await;
    c.send("SEND\ndestination:ocid1.queue.oc1.iad.someone-elses\n\nx\0").await;
    expect_error_and_close(&mut c, "destination not found or not authorized").await;
}

#[tokio::test]
async fn negotiated_heart_beats_are_sent() {
    let r = rig().await;
    let mut c = r.raw().await;
    c.send(&format!("CONNECT\naccept-version:1.2\nlogin:acme/bob\npasscode:{PASSCODE}\nheart-beat:0,500\n\n\0")).await;
    let connected = c.frame().await;
    assert_eq!(header(&connected, "heart-beat"), Some("500,0"), "{connected}");
    let mut byte = [0u8];
    tokio::time::timeout(Duration::from_secs(3), c.0.read_exact(&mut byte)).await.expect("a heart-beat").unwrap();
    assert_eq!(byte[0], b'\n');
}

#[tokio::test]
async fn silent_connection_without_heart_beats_times_out() {
    let r = rig_with(Duration::from_millis(300), 64).await;
    let mut c = r.connect("").await;
    expect_error_and_close(&mut c, "no frame or heart-beat").await;
}

#[tokio::test]
async fn dropped_connection_releases_its_unacknowledged_messages_at_once() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!(
        "SEND\ndestination:{q}\n\nm\0SUBSCRIBE\nid:1\ndestination:{q}\nack:client-individual\nvisibility:600\n\n\0"
    ))
    .await;
    let message = c.frame().await;
    assert!(message.starts_with("MESSAGE\n"), "{message}");
    drop(c);
    let params = GetMessages::new(None, Some(5), Some(5), None, false).unwrap();
    let got = r.engine.get_messages(&r.tenancy_id, &q, params).await.unwrap();
    assert_eq!(got.len(), 1, "released long before the 600 s visibility");
    assert_eq!(got[0].message.delivery_count, 2);
}

#[tokio::test]
async fn prefetch_caps_unacknowledged_messages_and_ack_frees_a_slot() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    for i in 0..5 {
        c.send(&format!("SEND\ndestination:{q}\n\nm{i}\0")).await;
    }
    c.send(&format!("SUBSCRIBE\nid:s\ndestination:{q}\nack:client-individual\nprefetch:2\n\n\0")).await;
    let first = c.frame().await;
    let _second = c.frame().await;
    let mut byte = [0u8];
    let more = tokio::time::timeout(Duration::from_millis(500), c.0.read(&mut byte)).await;
    assert!(more.is_err(), "a third message arrived past the prefetch window");
    let ack = header(&first, "ack").unwrap().to_owned();
    c.send(&format!("ACK\nid:{ack}\n\n\0")).await;
    assert!(c.frame().await.starts_with("MESSAGE\n"), "ACK did not free a slot");
}

#[tokio::test]
async fn ack_of_an_expired_lease_is_an_error() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!(
        "SEND\ndestination:{q}\n\nm\0SUBSCRIBE\nid:1\ndestination:{q}\nack:client-individual\nvisibility:1\n\n\0"
    ))
    .await;
    let message = c.frame().await;
    let ack = header(&message, "ack").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.send(&format!("ACK\nid:{ack}\n\n\0")).await;
    // The lease ended, so the message may be delivered again before the ERROR.
    loop {
        let frame = c.frame().await;
        if frame.starts_with("ERROR\n") {
            assert!(frame.contains("lease has ended"), "{frame}");
            break;
        }
        assert!(frame.starts_with("MESSAGE\n"), "{frame}");
    }
    c.closed().await;
}

#[tokio::test]
async fn connection_cap_makes_the_next_client_wait() {
    let r = rig_with(Duration::from_secs(60), 1).await;
    let first = r.connect("").await;
    let mut second = r.raw().await;
    second.send(&format!("CONNECT\naccept-version:1.2\nlogin:acme/bob\npasscode:{PASSCODE}\n\n\0")).await;
    let mut byte = [0u8];
    let early = tokio::time::timeout(Duration::from_millis(400), second.0.read(&mut byte)).await;
    assert!(early.is_err(), "second client served while at the cap");
    drop(first);
    assert!(second.frame().await.starts_with("CONNECTED\n"));
}

#[tokio::test]
async fn shutdown_sends_an_error_and_keeps_leases() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!(
        "SEND\ndestination:{q}\n\nm\0SUBSCRIBE\nid:1\ndestination:{q}\nack:client-individual\nvisibility:600\n\n\0"
    ))
    .await;
    assert!(c.frame().await.starts_with("MESSAGE\n"));
    r.shutdown.cancel();
    expect_error_and_close(&mut c, "shutting down").await;
    let stats = r.engine.stats(&r.tenancy_id, &q, None).await.unwrap();
    assert_eq!((stats.queue.in_flight, stats.queue.visible), (1, 0), "the lease was kept");
}

#[tokio::test]
async fn pipelined_sends_are_receipted_in_order_stored_in_order_and_share_commits() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    let sends = 300;
    // Written before any RECEIPT is read, as an asynchronous producer does; more than the
    // server reads ahead, so reading pauses and resumes.
    let frames: String = (0..sends).map(|i| format!("SEND\ndestination:{q}\nreceipt:r{i}\n\nm{i}\0")).collect();
    let commits_before = r.sqlite.commits();
    c.send(&frames).await;
    for i in 0..sends {
        let receipt = c.frame().await;
        assert_eq!(header(&receipt, "receipt-id"), Some(format!("r{i}").as_str()), "{receipt}");
    }
    let commits = r.sqlite.commits() - commits_before;
    assert!(commits < sends / 2, "{sends} pipelined SENDs took {commits} commits");
    let expected: Vec<String> = (0..sends).map(|i| format!("m{i}")).collect();
    assert_eq!(r.drain(&q).await, expected);
}

#[tokio::test]
async fn a_failed_send_in_a_pipeline_gets_the_error_after_the_receipts_before_it() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!(
        "SEND\ndestination:{q}\nreceipt:a\n\n1\0SEND\ndestination:{q}\nreceipt:b\n\n2\0\
         SEND\ndestination:ocid1.queue.oc1.iad.missing\nreceipt:c\n\n3\0SEND\ndestination:{q}\nreceipt:d\n\n4\0"
    ))
    .await;
    assert_eq!(header(&c.frame().await, "receipt-id"), Some("a"));
    assert_eq!(header(&c.frame().await, "receipt-id"), Some("b"));
    let error = c.frame().await;
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert_eq!(header(&error, "receipt-id"), Some("c"), "{error}");
    c.closed().await;
    let stored = r.drain(&q).await;
    assert_eq!(stored[..2], ["1", "2"], "receipted SENDs are stored");
}

#[tokio::test]
async fn frames_after_a_refused_frame_do_not_run_and_frames_before_it_do() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!("SEND\ndestination:{q}\nreceipt:a\n\n1\0FLY\n\n\0SEND\ndestination:{q}\nreceipt:b\n\n2\0")).await;
    assert_eq!(header(&c.frame().await, "receipt-id"), Some("a"));
    expect_error_and_close(&mut c, "unknown command").await;
    assert_eq!(r.drain(&q).await, ["1"]);
}

#[tokio::test]
async fn pipelined_acks_are_receipted_in_order_and_delete_every_message() {
    let r = rig().await;
    let q = r.queue().await;
    let count = 50;
    for i in 0..count {
        let message = berth_core::model::NewMessage {
            content: format!("m{i}"),
            channel: String::new(),
            properties: None,
            delay_secs: None,
        };
        r.engine.put_messages(&r.tenancy_id, &q, vec![message]).await.unwrap();
    }
    let mut c = r.connect("").await;
    c.send(&format!("SUBSCRIBE\nid:s\ndestination:{q}\nack:client-individual\nprefetch:{count}\n\n\0")).await;
    let mut acks = String::new();
    for _ in 0..count {
        let message = c.frame().await;
        let (ack, id) = (header(&message, "ack").unwrap(), header(&message, "message-id").unwrap());
        acks.push_str(&format!("ACK\nid:{ack}\nreceipt:{id}\n\n\0"));
    }
    c.send(&acks).await;
    let mut receipted = Vec::new();
    for _ in 0..count {
        receipted.push(header(&c.frame().await, "receipt-id").unwrap().to_owned());
    }
    let expected: Vec<String> = acks.lines().filter_map(|l| l.strip_prefix("receipt:")).map(str::to_owned).collect();
    assert_eq!(receipted, expected, "RECEIPTs in ACK order");
    let stats = r.engine.stats(&r.tenancy_id, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.queue.in_flight), (0, 0));
}

#[tokio::test]
async fn sends_written_just_before_the_client_closes_are_stored() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    let frames: String = (0..200).map(|i| format!("SEND\ndestination:{q}\n\nm{i}\0")).collect();
    c.send(&frames).await;
    drop(c);
    let mut visible = 0;
    for _ in 0..100 {
        visible = r.engine.stats(&r.tenancy_id, &q, None).await.unwrap().queue.visible;
        if visible == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(visible, 200, "every SEND read before the close is stored");
}

#[tokio::test]
async fn an_unsubscribe_behind_pipelined_acks_stops_deliveries_at_once() {
    let r = rig().await;
    let q = r.queue().await;
    let mut c = r.connect("").await;
    c.send(&format!(
        "SEND\ndestination:{q}\nreceipt:s\n\nm1\0SEND\ndestination:{q}\n\nm2\0SEND\ndestination:{q}\n\nm3\0\
         SUBSCRIBE\nid:1\ndestination:{q}\nack:client-individual\nprefetch:1\nvisibility:600\n\n\0"
    ))
    .await;
    assert_eq!(header(&c.frame().await, "receipt-id"), Some("s"));
    let first = c.frame().await;
    assert!(first.starts_with("MESSAGE\n"), "{first}");
    // The ACK frees the prefetch slot while the UNSUBSCRIBE waits for it to commit.
    let ack = header(&first, "ack").unwrap();
    c.send(&format!("ACK\nid:{ack}\nreceipt:a\n\n\0UNSUBSCRIBE\nid:1\nreceipt:u\n\n\0")).await;
    assert_eq!(header(&c.frame().await, "receipt-id"), Some("a"));
    let next = c.frame().await;
    assert_eq!(header(&next, "receipt-id"), Some("u"), "no MESSAGE after the UNSUBSCRIBE was read: {next}");
    let stats = r.engine.stats(&r.tenancy_id, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.queue.in_flight), (2, 0), "m2 and m3 wait for the next consumer");
}
