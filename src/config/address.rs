//! `host:port` settings (`server.listen`, `server.admin_listen`, `upstreams.NAME.address`) become
//! socket addresses when the config is loaded (SPEC §9), so a request never waits for DNS.
//!
//! Loading a config for the sidecar asks the system's resolver. Anything that only checks the
//! format — the config fuzz target — uses [`Resolver::Offline`]: a fuzzed host name must not
//! become a DNS query (one did, and a lookup of "924.0.0.1" took over two seconds).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// How host names in the config are turned into addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// The system's resolver (`getaddrinfo`), as the sidecar itself loads its config.
    System,
    /// No lookups: IP literals as written, any well-formed host name as 192.0.2.1
    /// (TEST-NET-1, never routed), so validation goes on exactly as it would with a name that
    /// resolved.
    Offline,
}

/// Where [`Resolver::Offline`] puts every host name.
const OFFLINE_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

impl Resolver {
    /// The first address of `host:port`, or `None` when it is malformed or does not resolve.
    pub fn resolve(self, host_port: &str) -> Option<SocketAddr> {
        match self {
            Resolver::System => host_port.to_socket_addrs().ok()?.next(),
            Resolver::Offline => {
                if let Ok(addr) = host_port.parse::<SocketAddr>() {
                    return Some(addr);
                }
                let (host, port) = host_port.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                // What getaddrinfo would take as a name: letters, digits, dots and dashes.
                let is_name = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                is_name.then_some(SocketAddr::new(OFFLINE_HOST, port))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_takes_literals_as_written_and_names_without_a_lookup() {
        let r = Resolver::Offline;
        assert_eq!(
            r.resolve("127.0.0.1:80"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(r.resolve("[::1]:8443"), Some("[::1]:8443".parse().unwrap()));
        assert_eq!(
            r.resolve("app.internal:3000"),
            Some("192.0.2.1:3000".parse().unwrap())
        );
        assert_eq!(
            r.resolve("924.0.0.1:3000"),
            Some("192.0.2.1:3000".parse().unwrap())
        );
        for bad in [
            "",
            ":80",
            "host",
            "host:",
            "host:99999",
            "ho st:80",
            "host:8o",
            "a/b:1",
        ] {
            assert_eq!(r.resolve(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn system_resolves_literals() {
        assert_eq!(
            Resolver::System.resolve("127.0.0.1:9"),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(Resolver::System.resolve("127.0.0.1"), None);
    }
}
