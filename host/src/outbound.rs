//! The `outbound` interface: HTTP from a plugin to the hosts on its allow-list, nowhere else.
//!
//! The allow-list of a call is what its deployment grants: hosts the manifest requests
//! (`[capabilities] outbound_hosts`) that the region's enablement row lists in its
//! `outbound_hosts`. A rule is a host name (`api.water.example`), optionally with a port
//! (`api.water.example:8443`), or `*.` and a domain for its subdomains. Redirects are not
//! followed, so a response cannot lead the plugin elsewhere; and a host name reaches public
//! addresses only, so its DNS cannot either: whoever runs a partner's DNS could otherwise
//! point an allowed name at the bank's own network. A rule naming an IP address is the
//! admin's explicit choice and reaches that address, whatever it is.
//!
//! Every request is bounded: the timeout, request and response bytes, requests per call, and
//! the call's total outbound wait, which extends the call's deadline (the runtime reads it
//! through [`CallOutbound::waited`]) and never burns fuel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::OutboundConfig;
use crate::runtime::Metered;
use crate::runtime::interfaces::outbound as wit;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Lowercase host name or IP address; for a wildcard, the domain after `*.`.
    host: String,
    /// Whether subdomains of `host` match (and `host` itself does not).
    subdomains: bool,
    /// The only port allowed, if one.
    port: Option<u16>,
}

impl HostRule {
    /// Parses `host`, `host:port` or `*.domain[:port]`.
    pub fn parse(text: &str) -> Result<HostRule, String> {
        let problem = || {
            format!(
                "{text:?} is not a host rule: give a host name or IP address, optionally with \
                 :port, or *.domain for its subdomains (no scheme, no path)"
            )
        };
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                (host, Some(port.parse::<u16>().map_err(|_| problem())?))
            }
            _ => (text, None),
        };
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (host, false),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(problem());
        }
        Ok(HostRule {
            host: host.to_ascii_lowercase(),
            subdomains,
            port,
        })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        let host_matches = if self.subdomains {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        };
        host_matches && self.port.is_none_or(|only| only == port)
    }
}

/// Whether `rules` allow `url`'s host and port.
pub fn allowed(rules: &[HostRule], url: &reqwest::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rules.iter().any(|rule| rule.allows(host, port))
}

/// One call's `outbound`: its allow-list, limits and what it has used.
#[derive(Default)]
pub struct CallOutbound {
    client: Option<reqwest::Client>,
    rules: Arc<[HostRule]>,
    settings: Option<OutboundConfig>,
    plugin_id: Arc<str>,
    requests: u32,
    waited: Arc<AtomicU64>,
}

impl CallOutbound {
    /// The outbound of a call of `plugin_id` allowed to reach `rules`.
    pub fn new(
        client: reqwest::Client,
        rules: Arc<[HostRule]>,
        settings: OutboundConfig,
        plugin_id: Arc<str>,
    ) -> Self {
        Self {
            client: Some(client),
            rules,
            settings: Some(settings),
            plugin_id,
            requests: 0,
            waited: Arc::default(),
        }
    }

    /// Microseconds the call has waited on responses so far, shared with the runtime, which
    /// extends the call's deadline by it.
    pub fn waited(&self) -> Arc<AtomicU64> {
        self.waited.clone()
    }

    async fn send(
        &mut self,
        request: wit::HttpRequest,
    ) -> Result<wit::HttpResponse, wit::OutboundError> {
        let (Some(client), Some(settings)) = (&self.client, &self.settings) else {
            return Err(wit::OutboundError::ConnectionFailed(
                "outbound is not available here".into(),
            ));
        };
        if self.requests >= settings.requests_per_call_max {
            return Err(wit::OutboundError::TooManyRequests(
                settings.requests_per_call_max,
            ));
        }
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "only http and https URLs, not {}",
                url.scheme()
            )));
        }
        if !allowed(&self.rules, &url) {
            let host = url.host_str().unwrap_or_default().to_owned();
            tracing::warn!(
                plugin = %self.plugin_id,
                %host,
                "outbound request refused: the host is not on the plugin's allow-list"
            );
            return Err(wit::OutboundError::HostNotAllowed(host));
        }
        let method = match request.method.to_ascii_uppercase().as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            "DELETE" => reqwest::Method::DELETE,
            "HEAD" => reqwest::Method::HEAD,
            other => return Err(invalid(format!("method {other:?} is not supported"))),
        };
        let body = request.body.unwrap_or_default();
        if body.len() as u64 > settings.request_bytes_max {
            return Err(invalid(format!(
                "the request body is over {} bytes",
                settings.request_bytes_max
            )));
        }
        let mut builder = client.request(method, url);
        for header in request.headers {
            let name = reqwest::header::HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| invalid(format!("{:?} is not a header name", header.name)))?;
            if HOST_SET_HEADERS.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "header {name} is set by the host (it names the host the allow-list \
                     checked, or frames the request)"
                )));
            }
            let value = reqwest::header::HeaderValue::from_str(&header.value)
                .map_err(|_| invalid(format!("the value of header {name} is not valid")))?;
            builder = builder.header(name, value);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let waited = Duration::from_micros(self.waited.load(Ordering::Relaxed));
        let budget = Duration::from_millis(settings.wait_ms_max).saturating_sub(waited);
        let timeout = Duration::from_millis(settings.timeout_ms).min(budget);
        if timeout.is_zero() {
            return Err(wit::OutboundError::Timeout);
        }
        self.requests += 1;
        // The whole timeout counts as waited while the request is in flight, so the call's
        // deadline covers it; what was not used is given back after.
        let reserved = timeout.as_micros() as u64;
        self.waited.fetch_add(reserved, Ordering::Relaxed);
        let started = Instant::now();
        let limit = settings.response_bytes_max;
        let result = tokio::time::timeout(timeout, async {
            let mut response = builder.send().await.map_err(connection_failed)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| wit::Header {
                    name: name.as_str().to_owned(),
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })
                .collect();
            let too_large =
                wit::OutboundError::ResponseTooLarge(u32::try_from(limit).unwrap_or(u32::MAX));
            if response
                .content_length()
                .is_some_and(|length| length > limit)
            {
                return Err(too_large);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(connection_failed)? {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(wit::HttpResponse {
                status,
                headers,
                body,
            })
        })
        .await;
        let used = (started.elapsed().as_micros() as u64).min(reserved);
        self.waited.fetch_sub(reserved - used, Ordering::Relaxed);
        result.unwrap_or(Err(wit::OutboundError::Timeout))
    }
}

fn invalid(message: String) -> wit::OutboundError {
    wit::OutboundError::InvalidRequest(message)
}

/// Headers a plugin may not set: `host` would reach another site on an allowed server (the
/// allow-list checks the URL's host), and the others frame the request or the connection,
/// which the HTTP client does.
const HOST_SET_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

fn connection_failed(error: reqwest::Error) -> wit::OutboundError {
    if error.is_timeout() {
        return wit::OutboundError::Timeout;
    }
    // The chain says what failed (DNS, refused, TLS) without the URL, which the plugin knows.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    wit::OutboundError::ConnectionFailed(message)
}

impl wit::Host for Metered<'_, CallOutbound> {
    async fn send(
        &mut self,
        request: wit::HttpRequest,
    ) -> wasmtime::Result<Result<wit::HttpResponse, wit::OutboundError>> {
        Ok(self.charge()?.send(request).await)
    }
}

/// An HTTP client that follows no redirects, with TLS from the system's root certificates.
/// With `public_only`, host names reach public addresses only ([`is_public`]) and
/// requests go straight to them, not through a proxy from the environment (which would
/// resolve the names instead): the client plugins' requests share. Without it, the client of
/// the bank's own connectors, and of plugins where private addresses are allowed.
pub fn client(public_only: bool) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifecircle/", env!("CARGO_PKG_VERSION")));
    if public_only {
        builder
            .no_proxy()
            .dns_resolver(Arc::new(PublicAddresses))
            .build()
    } else {
        builder.build()
    }
}

/// Resolves host names to public addresses only (why: see the module): addresses that are not
/// public are dropped from every answer, and a name that resolves to nothing else is refused.
/// IP addresses in URLs are not resolved, so a rule naming one reaches it.
struct PublicAddresses;

impl reqwest::dns::Resolve for PublicAddresses {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty()
                && let Some(first) = found.first()
            {
                tracing::warn!(
                    %host,
                    addresses = ?found,
                    "outbound request refused: the name resolves only to addresses that are not public"
                );
                return Err(format!(
                    "{host} resolves to {} and no public address; only an allow-list rule \
                     naming an IP address reaches a private one",
                    first.ip()
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether `ip` is a public (globally routable) address: not loopback, private, shared
/// (carrier NAT), link-local, unique-local, multicast, documentation, benchmarking or reserved,
/// and not one of those inside an IPv6 address (IPv4-mapped, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let embedded =
                |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
            if let Some(v4) = ip.to_ipv4_mapped() {
                is_public_v4(v4)
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                is_public_v4(embedded(s[6], s[7]))
            } else if s[0] == 0x2002 {
                is_public_v4(embedded(s[1], s[2]))
            } else {
                !(s[..6] == [0; 6] // ::, ::1 and the IPv4-compatible ::a.b.c.d
                    || ip.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                    || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                    || (s[0], s[1]) == (0x2001, 0x0db8)) // documentation
            }
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 included
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation()
        || a >= 240 // reserved, 255.255.255.255 included
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (a, b, c) == (192, 0, 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18)) // benchmarking 198.18.0.0/15
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).expect("url")
    }

    #[test]
    fn rules_match_host_port_and_subdomains_only() {
        let rules: Vec<HostRule> = ["api.water.example", "*.gas.example:8443", "127.0.0.1"]
            .into_iter()
            .map(|r| HostRule::parse(r).expect(r))
            .collect();
        assert!(allowed(&rules, &url("https://api.water.example/bills")));
        assert!(allowed(&rules, &url("http://API.Water.Example:8080/")));
        assert!(!allowed(&rules, &url("https://evil.api.water.example/")));
        assert!(!allowed(&rules, &url("https://api.water.example.evil/")));
        assert!(allowed(&rules, &url("https://pay.gas.example:8443/")));
        assert!(!allowed(&rules, &url("https://pay.gas.example/")));
        assert!(!allowed(&rules, &url("https://gas.example:8443/")));
        assert!(!allowed(&rules, &url("https://xgas.example:8443/")));
        assert!(allowed(&rules, &url("http://127.0.0.1:9999/")));
        assert!(!allowed(&rules, &url("http://127.0.0.2/")));
        assert!(!allowed(&rules, &url("http://[::1]/")));
    }

    #[test]
    fn only_globally_routable_addresses_are_public() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().expect(public)), "{public}");
        }
        for private in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:10.0.0.5",
            "64:ff9b::a00:5",
            "2002:a00:5::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().expect(private)), "{private}");
        }
    }

    #[tokio::test]
    async fn a_name_that_leads_only_to_private_addresses_is_refused() {
        use reqwest::dns::Resolve;
        let name = |host: &str| host.parse::<reqwest::dns::Name>().expect("a name");
        let refused = PublicAddresses
            .resolve(name("localhost"))
            .await
            .err()
            .expect("localhost leads to the host itself");
        assert!(
            refused.to_string().contains("no public address"),
            "{refused}"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "https://a.example",
            "a.example/path",
            "a.example:99999",
            "*.",
            "a..b",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad}");
        }
    }
}
