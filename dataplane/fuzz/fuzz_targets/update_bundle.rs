//! Update bundles come from outside (a stick, a download): any bytes get
//! a verified bundle or a clear refusal, never a panic, and nothing is
//! handed on before the signature checked out.
//!
//! Two halves of the input space: the bytes as a whole bundle (the tar
//! reader, the entry checks, the signature's decoding); and, so that the
//! fuzzer gets past the signature, the first line as a manifest that this
//! target signs with its own key, followed by the rest as payloads (the
//! manifest's validation and the payloads' reading and hashing).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_update::{bundle, version::Version};

struct Keys {
    sk: minisign::SecretKey,
    pk: minisign_verify::PublicKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let pk = minisign_verify::PublicKey::decode(&kp.pk.to_box().unwrap().to_string()).unwrap();
        Keys { sk: kp.sk, pk }
    })
}

fn check(bytes: &[u8]) {
    let running = Version::parse("0.1.0").unwrap();
    let expect = bundle::Expect {
        arch: "x86_64",
        running: &running,
        key: &keys().pk,
    };
    let mut signed_first = false;
    let r = bundle::check(bytes, &expect, |_, r| {
        signed_first = true;
        std::io::copy(r, &mut std::io::sink()).map(|_| ())
    });
    if let Err(e) = r {
        let _ = e.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        check(rest);
        return;
    }
    // A signed manifest (the first line) and payloads (the rest, split in
    // three by the next two bytes).
    let (manifest, rest) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let sig = minisign::sign(None, &keys().sk, manifest, Some("fuzz"), None)
        .unwrap()
        .to_string();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(bundle::MANIFEST, manifest);
    add(bundle::SIGNATURE, sig.as_bytes());
    let (cut, payload) = rest.split_at(rest.len().min(2));
    let a = usize::from(cut.first().copied().unwrap_or(0)).min(payload.len());
    let c = usize::from(cut.get(1).copied().unwrap_or(0)).min(payload.len() - a);
    for (name, part) in bundle::FILES.iter().map(|(n, _)| *n).zip([
        &payload[..a],
        &payload[a..a + c],
        &payload[a + c..],
    ]) {
        add(name, part);
    }
    check(&b.into_inner().unwrap());
});
