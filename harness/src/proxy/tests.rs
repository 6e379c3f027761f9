use super::*;
use tokio::io::AsyncWriteExt;

/// An echo server on a free port.
async fn echo() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).await?;
    Ok(got)
}

const T: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(100);

#[tokio::test]
async fn forwards_and_keeps_order_under_latency() {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let got = tokio::time::timeout(T, roundtrip(&mut s, b"hello")).await;
    assert_eq!(got.unwrap().unwrap(), b"hello");

    proxy.set_latency(Duration::from_millis(30));
    let start = std::time::Instant::now();
    for i in 0..10u8 {
        s.write_all(&[i]).await.unwrap();
    }
    let mut got = [0u8; 10];
    tokio::time::timeout(T, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(60));
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    proxy.set_latency(Duration::ZERO);
    let got = tokio::time::timeout(T, roundtrip(&mut s, b"x")).await;
    assert_eq!(got.unwrap().unwrap(), b"x");
}

#[tokio::test]
async fn partition_black_holes_and_heal_closes_old_connections() {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let mut old = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut old, b"a").await.unwrap(), b"a");

    proxy.partition();
    assert!(proxy.is_partitioned());
    assert!(tokio::time::timeout(SHORT, roundtrip(&mut old, b"b"))
        .await
        .is_err());
    let mut during = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    assert!(tokio::time::timeout(SHORT, roundtrip(&mut during, b"c"))
        .await
        .is_err());

    tokio::time::timeout(T, proxy.heal())
        .await
        .unwrap()
        .unwrap();
    // Both were closed at heal: a read sees EOF (or reset), never data.
    for s in [&mut old, &mut during] {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(T, s.read(&mut b)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let got = tokio::time::timeout(T, roundtrip(&mut fresh, b"d")).await;
    assert_eq!(got.unwrap().unwrap(), b"d");
}

#[tokio::test]
async fn heal_without_partition_keeps_connections() {
    let proxy = Proxy::start(echo().await).await.unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    proxy.heal().await.unwrap();
    let got = tokio::time::timeout(T, roundtrip(&mut s, b"z")).await;
    assert_eq!(got.unwrap().unwrap(), b"z");
}

/// A server that echoes and records what it receives, across connections, in arrival
/// order; a notify fires at each arrival.
async fn recorder() -> (
    u16,
    Arc<std::sync::Mutex<Vec<u8>>>,
    Arc<tokio::sync::Notify>,
) {
    let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (s2, a2) = (seen.clone(), arrived.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let (seen, arrived) = (s2.clone(), a2.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    arrived.notify_waiters();
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    });
    (port, seen, arrived)
}

#[tokio::test]
async fn held_requests_land_after_a_newer_connection_and_after_their_client_left() {
    let (port, seen, arrived) = recorder().await;
    let proxy = Proxy::start(port).await.unwrap();
    let mut old = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut old, b"a").await.unwrap(), b"a");

    proxy.hold_requests();
    old.write_all(b"L").await.unwrap();
    assert!(
        tokio::time::timeout(SHORT, old.read(&mut [0u8; 1]))
            .await
            .is_err(),
        "a held request gets no reply"
    );
    assert_eq!(proxy.held_connections(), 1);
    // A connection opened during the hold flows.
    let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let got = tokio::time::timeout(T, roundtrip(&mut fresh, b"n")).await;
    assert_eq!(got.unwrap().unwrap(), b"n");
    // The client gives up on the old connection; its bytes stay held.
    drop(old);
    assert_eq!(seen.lock().unwrap().as_slice(), b"an");
    assert_eq!(proxy.held_connections(), 1);

    let landed = arrived.notified();
    tokio::time::timeout(T, proxy.deliver_held())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxy.held_connections(), 0);
    tokio::time::timeout(T, landed).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), b"anL", "the late one last");
    // The newer connection is untouched.
    let got = tokio::time::timeout(T, roundtrip(&mut fresh, b"m")).await;
    assert_eq!(got.unwrap().unwrap(), b"m");
}
