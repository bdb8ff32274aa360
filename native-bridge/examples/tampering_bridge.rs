//! A malicious bridge, for end-to-end tests only: it links to two real bridges' relays and sits
//! in the middle of their signaling as a full WebRTC man in the middle (its own DTLS
//! certificate towards each side, data channels spliced). Sessions through it must fail.
//!
//! `tampering_bridge <own address> <relay host:port> <relay host:port>` — run it inside a test
//! network namespace; it stops when either link closes or on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/tamper/mod.rs"]
mod tamper;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [own, a, b] = <[String; 3]>::try_from(args).expect("usage: tampering_bridge OWN_ADDR RELAY_A RELAY_B");
    let t = tamper::Tamper::new();
    t.set(tamper::Mode::ManInTheMiddle);
    println!("tampering between {a} and {b}");
    tokio::select! {
        () = tamper::run(t, own, [a, b]) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
