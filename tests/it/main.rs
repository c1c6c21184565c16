//! Integration tests: real mock backends (tools/mock) and a real ringway, on 127.0.0.1
//! with ports from the OS. One test binary, one module per concern.

mod anthropic;
mod balancing;
mod credentials;
mod dashboard;
mod dns;
mod dns_server;
mod engine;
mod failover;
mod forwarding;
mod groups;
mod hardening;
mod harness;
mod hostile;
mod limits;
mod mock_tls;
mod models;
mod olla;
mod olla_pages;
mod process;
mod ratelimit;
mod reload;
mod replicas;
mod sticky;
mod tls;
mod tls_listener;
