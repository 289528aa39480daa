//! TCP MD5 signatures (RFC 2385) on a socket, as BGP routers still require: Linux's `TCP_MD5SIG` option
//! holds one key per peer address and must be set before `connect`, so that the SYN is signed.
//!
//! Neither `socket2` nor `nix` wraps this option, and `libc` has the constant but not `struct tcp_md5sig`,
//! so the struct is laid out here by hand (linux/tcp.h) and passed to `setsockopt`: the one `unsafe`
//! call of the crate.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY: usize = 80;
/// `sizeof(struct __kernel_sockaddr_storage)`.
const SOCKADDR_STORAGE: usize = 128;
/// `struct tcp_md5sig`: address, flags (1), prefix length (1), key length (2), ifindex (4), key.
const TCP_MD5SIG_LEN: usize = SOCKADDR_STORAGE + 1 + 1 + 2 + 4 + MAX_KEY;

/// Sets `key` as the MD5 signature key for connections with `peer` on `socket`.
pub fn set_key(socket: &socket2::Socket, peer: SocketAddr, key: &[u8]) -> io::Result<()> {
    let option = layout(peer, key)?;
    let len = libc::socklen_t::try_from(option.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "tcp_md5sig too long"))?;
    // SAFETY: `option` is a live, initialised buffer of exactly `len` bytes laid out as the kernel's
    // `struct tcp_md5sig`; the kernel only reads it (copy_from_user) during the call, so neither its
    // alignment nor its lifetime beyond the call matters. The descriptor is owned by `socket`.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            option.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The bytes of `struct tcp_md5sig` for `peer` and `key` (native byte order for the family, network
/// order for port and address, as in a `sockaddr`).
fn layout(peer: SocketAddr, key: &[u8]) -> io::Result<[u8; TCP_MD5SIG_LEN]> {
    if key.len() > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {MAX_KEY} bytes"),
        ));
    }
    let mut option = [0u8; TCP_MD5SIG_LEN];
    match peer {
        SocketAddr::V4(v4) => {
            // The constants are small positive numbers; the casts cannot truncate.
            let family = libc::AF_INET as libc::sa_family_t;
            option[0..2].copy_from_slice(&family.to_ne_bytes());
            option[4..8].copy_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            let family = libc::AF_INET6 as libc::sa_family_t;
            option[0..2].copy_from_slice(&family.to_ne_bytes());
            option[8..24].copy_from_slice(&v6.ip().octets());
        }
    }
    // The key length is at most 80 (checked above).
    let key_len = u16::try_from(key.len()).unwrap_or(0);
    option[SOCKADDR_STORAGE + 2..SOCKADDR_STORAGE + 4].copy_from_slice(&key_len.to_ne_bytes());
    option[SOCKADDR_STORAGE + 8..SOCKADDR_STORAGE + 8 + key.len()].copy_from_slice(key);
    Ok(option)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_accepted_by_the_kernel_on_an_ipv4_and_an_ipv6_socket() {
        for peer in ["192.0.2.1:179", "[2001:db8::1]:179"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(peer),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            set_key(&socket, peer, b"secret").unwrap();
        }
    }

    #[test]
    fn an_overlong_key_is_refused() {
        let peer: SocketAddr = "192.0.2.1:179".parse().unwrap();
        assert!(layout(peer, &[b'x'; 81]).is_err());
    }
}
