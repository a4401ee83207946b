# The two commands of the README, and the pieces they are made of.
#
#   make run    build the plugins and the host, then serve the reference plugins on SQLite
#   make test   build the plugins, then run every test (host, SDK, end to end)

CARGO ?= cargo
# Extra arguments for cargo (CI passes --locked).
CARGO_FLAGS ?=

.PHONY: run test plugins gate bench

run: plugins
	$(CARGO) run $(CARGO_FLAGS) --release -p lifecircle -- serve

test: plugins
	$(CARGO) test $(CARGO_FLAGS) --workspace
	cd plugins && $(CARGO) test $(CARGO_FLAGS)

plugins:
	bash plugins/build.sh $(CARGO_FLAGS)

# fmt, clippy and docs in both workspaces, warnings as errors (what CI runs before the tests).
gate:
	$(CARGO) fmt --all --check
	cd plugins && $(CARGO) fmt --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy $(CARGO_FLAGS) --release --target wasm32-wasip2 --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(CARGO_FLAGS) --workspace --no-deps

bench: plugins
	$(CARGO) run $(CARGO_FLAGS) --release -p lifecircle -- bench
