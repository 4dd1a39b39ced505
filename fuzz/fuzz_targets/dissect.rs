//! Arbitrary bytes through every dissector: no panic, no hang, and every accessor of a
//! message that parsed works.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nflua_dissect::{dns, http, tls};

fuzz_target!(|data: &[u8]| {
    let mut scratch = vec![0u8; data.len()];
    if let Ok(hello) = tls::client_hello(data, &mut scratch) {
        assert!(hello.consumed <= data.len());
        let _ = (hello.server_name(), hello.alpn().count(), hello.supported_versions().count());
        let _ = hello.extensions().count();
    }
    if let Ok(request) = http::request(data) {
        assert!(request.head_len <= data.len());
        let _ = (request.path(), request.query(), request.headers().count(), request.header("host"));
    }
    if let Ok(message) = dns::message(data) {
        let mut name = [0u8; dns::MAX_NAME];
        for q in message.questions() {
            q.name.write_dotted(&mut name);
        }
        for section in 0..3 {
            for record in message.records(section) {
                record.name.write_dotted(&mut name);
                if let dns::Data::Name(n) | dns::Data::Mx { exchange: n, .. } = record.data() {
                    n.write_dotted(&mut name);
                }
                let _ = record.txt_strings().count();
            }
        }
    }
    let _ = nflua_packet::headers(data);
});
