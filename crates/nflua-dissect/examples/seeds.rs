//! Writes the fuzz target's seed inputs: `cargo run -p nflua-dissect --example seeds -- DIR`.
use nflua_dissect::{dns, tls};

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus/dissect".into());
    let hello = tls::build::hello(
        &[0x1301, 0xc02f],
        &[(0, tls::build::sni("example.com")), (16, tls::build::alpn(&["h2"])), (43, vec![2, 3, 4])],
    );
    std::fs::write(format!("{dir}/seed-tls"), tls::build::records(&hello, 64))?;
    std::fs::write(format!("{dir}/seed-http"), b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nX: y\r\n\r\n")?;
    let mut response = dns::build::query("www.example.com", dns::TYPE_A);
    response[2] = 0x81;
    response[7] = 1;
    response.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 16]);
    std::fs::write(format!("{dir}/seed-dns"), response)?;
    Ok(())
}
