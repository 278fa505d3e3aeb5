//! Files we write open again with the matching identities, in binary and
//! armor, for every recipient type; the wrong identity is `no match`.

use std::io::{BufReader, Read, Write};

use cryptstream_age::{
    open_stream, parse_identity_file, seal_stream, ArmoredReader, ArmoredWriter, FailureClass,
    Identity, Recipient,
};
use zeroize::Zeroizing;

fn encrypt(recipients: &[Recipient], plain: &[u8], armor: bool) -> Vec<u8> {
    if armor {
        let armored = ArmoredWriter::new(Vec::new()).unwrap();
        let mut w = seal_stream(armored, recipients).unwrap();
        w.write_all(plain).unwrap();
        let (armored, _) = w.finish().unwrap();
        armored.finish().unwrap()
    } else {
        let mut w = seal_stream(Vec::new(), recipients).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap().0
    }
}

fn decrypt(file: &[u8], identities: &[Identity], armor: bool) -> Result<Vec<u8>, FailureClass> {
    let input: Box<dyn Read + '_> = if armor {
        Box::new(ArmoredReader::new(file))
    } else {
        Box::new(file)
    };
    let mut r = open_stream(BufReader::new(input), identities).map_err(|e| e.class().unwrap())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|_| FailureClass::Payload)?;
    Ok(out)
}

#[test]
fn every_recipient_type_round_trips_and_others_do_not_match() {
    let x = Identity::generate_x25519().unwrap();
    let (pq, pq_text) = Identity::generate_hybrid().unwrap();
    let pq_again = parse_identity_file(&format!("# a comment\n{}\n", *pq_text)).unwrap();
    let x_text = x.encode_x25519().unwrap();
    let x_again = Identity::parse(&x_text).unwrap();
    let x_recipient = Recipient::parse(&x.recipient().unwrap().encode().unwrap()).unwrap();
    let pq_recipient = Recipient::parse(&pq.recipient().unwrap().encode().unwrap()).unwrap();
    let other = Identity::generate_x25519().unwrap();
    for len in [0usize, 1, 65535, 65536, 65537, 200_000] {
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for armor in [false, true] {
            let file = encrypt(std::slice::from_ref(&x_recipient), &plain, armor);
            assert_eq!(
                decrypt(&file, &[x_again.clone_x25519()], armor).unwrap(),
                plain
            );
            assert_eq!(
                decrypt(&file, &[other.clone_x25519()], armor),
                Err(FailureClass::NoMatch)
            );
            let file = encrypt(std::slice::from_ref(&pq_recipient), &plain, armor);
            assert_eq!(decrypt(&file, &pq_again, armor).unwrap(), plain);
        }
    }
    let scrypt = Recipient::Scrypt {
        passphrase: Zeroizing::new(b"correct horse".to_vec()),
        log_n: 10,
    };
    let file = encrypt(&[scrypt], b"secret", false);
    let right = Identity::passphrase(Zeroizing::new(b"correct horse".to_vec()));
    let wrong = Identity::passphrase(Zeroizing::new(b"wrong".to_vec()));
    assert_eq!(decrypt(&file, &[right], false).unwrap(), b"secret");
    assert_eq!(decrypt(&file, &[wrong], false), Err(FailureClass::NoMatch));
}

trait CloneX25519 {
    fn clone_x25519(&self) -> Identity;
}

impl CloneX25519 for Identity {
    fn clone_x25519(&self) -> Identity {
        Identity::parse(&self.encode_x25519().unwrap()).unwrap()
    }
}
