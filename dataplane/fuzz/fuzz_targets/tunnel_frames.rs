//! A decrypted tunnel stream from an authenticated but hostile peer: frames
//! are parsed in a loop as the session does; no input may panic, loop or
//! read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_core::wire::tunnel::{self, Frame, FrameType, Hello};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(f) = Frame::new_checked(rest) {
        let p = f.payload();
        match f.frame_type() {
            FrameType::Hello => {
                if let Ok(h) = Hello::parse(p) {
                    let mut out = Vec::new();
                    h.emit_frame(&mut out);
                    let again = Frame::new_checked(&out[..]).expect("own HELLO parses");
                    assert_eq!(Hello::parse(again.payload()).expect("round trip").version, h.version);
                }
            }
            FrameType::Close => {
                let _ = tunnel::parse_close(p);
            }
            FrameType::Packet => {
                let _ = sluice_core::wire::ip::Packet::new_checked(p);
            }
            FrameType::EchoRequest | FrameType::EchoReply => {
                if let Ok(e) = tunnel::Echo::parse(p) {
                    assert_eq!(tunnel::Echo::parse(&e.to_bytes()), Ok(e));
                }
            }
            FrameType::DatagramOffer | FrameType::DatagramAccept => {
                if let Ok(d) = tunnel::DatagramSetup::parse(p) {
                    let frame = d.frame(f.frame_type());
                    let again = Frame::new_checked(&frame[..]).expect("own setup frame parses");
                    assert_eq!(tunnel::DatagramSetup::parse(again.payload()), Ok(d));
                }
            }
            FrameType::DatagramUse => {
                let _ = p.first();
            }
            FrameType::Keepalive | FrameType::Unknown(_) => {}
        }
        assert!(f.total_len() >= tunnel::HEADER_LEN && f.total_len() <= rest.len());
        rest = &rest[f.total_len()..];
    }
});
