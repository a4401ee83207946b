//! End-to-end tests: real hosts on 127.0.0.1:0 with temporary SQLite databases and real plugins
//! built from `plugins/`, driven over HTTP.

mod auth;
mod bills;
mod closed_loop;
mod coupons;
mod errors;
mod fairness;
mod hello;
mod hostile;
mod identity;
mod jobs;
mod ledger;
mod loading;
mod mall;
mod openapi;
mod outbound;
mod payments;
mod points;
mod readme_examples;
mod registry;
mod reports;
mod store;
mod wheel;
