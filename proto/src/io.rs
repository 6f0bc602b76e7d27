//! What both ends of a connection do on their own machine, shared by the
//! server and the client (feature `io`; the guest SDK, which links this
//! crate into Wasm plugins, leaves it off): the UDP socket QUIC runs on,
//! the cipher suites it prefers, and capped reads of the small files a
//! connection needs (CA certificates, token secrets).

use std::net::SocketAddr;

/// Socket buffers for QUIC's UDP socket: the OS default (~208 KiB) drops
/// packets at a few hundred MB/s on loopback, and every drop costs a
/// congestion-window cut. Linux caps the size at `net.core.rmem_max`.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// ring's TLS provider with AES-128-GCM first: QUIC encrypts every byte
/// Weir moves, and AES-128 takes 10 rounds per block to AES-256's 14 —
/// the same GHASH, the same TLS 1.3 guarantees (both ends of a Weir
/// connection use this order; the server follows the client's).
pub fn quic_crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

/// A UDP socket bound to `addr` with `buffer_bytes` send and receive buffers
/// (best effort: a smaller OS limit is not an error), for `quinn::Endpoint::new`.
pub fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Largest CA certificate file read: a bundle of many certificates fits;
/// a wrong path such as `/dev/zero` fails at once instead of filling memory.
pub const CA_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Largest token file read (a secret is 69 bytes).
pub const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Reads a whole file of at most `bytes_max` bytes; a larger one (or an
/// endless one) is an `InvalidData` error naming the limit.
pub fn read_capped(path: &std::path::Path, bytes_max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut contents = Vec::new();
    std::fs::File::open(path)?
        .take(bytes_max + 1)
        .read_to_end(&mut contents)?;
    if contents.len() as u64 > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {bytes_max} bytes; is it the right file?",
                path.display()
            ),
        ));
    }
    Ok(contents)
}

/// Reads a token secret from a file (such as the server's
/// `DATA/admin.token`), without surrounding whitespace.
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = read_capped(path, TOKEN_FILE_BYTES_MAX)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not text; is it a token file?", path.display()),
        )
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use rustls::CipherSuite;

    #[test]
    fn quic_prefers_aes_128_and_keeps_the_other_suites() {
        let defaults = rustls::crypto::ring::default_provider().cipher_suites;
        let suites: Vec<CipherSuite> = super::quic_crypto_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(suites.len(), defaults.len());
        for suite in defaults {
            assert!(suites.contains(&suite.suite()), "{:?} kept", suite.suite());
        }
    }
}
