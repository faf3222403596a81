# sandpool — every install step lives here so a fresh machine needs only
# `make run` or `make test`.

SHELL := /bin/bash
GO ?= go
GVISOR_VERSION := v0.0.0-20260905035102-160fafc42237
RUNSC := $(CURDIR)/bin/runsc
ROOTFS := $(CURDIR)/build/rootfs
STATE_DIR ?= $(CURDIR)/var
SANDPOOL := $(CURDIR)/bin/sandpool
AGENT := $(CURDIR)/bin/sandpool-agent
CONFIG ?= $(CURDIR)/cmd/sandpool/sandpool.yaml
JS := $(CURDIR)/clients/js
# Debian's mirror as this machine's own apt sources name it (never hard-coded).
DEBIAN_MIRROR ?= $(shell awk '/^URIs:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || awk '/^deb / {print $$2; exit}' /etc/apt/sources.list)

.PHONY: all build runsc agent rootfs deps run test test-go test-js js-deps vet fmt-check bench clean

all: build

build: $(SANDPOOL)

$(SANDPOOL): $(shell find cmd actors runsc transport pool -name '*.go' 2>/dev/null) go.mod go.sum
	$(GO) build -o $@ ./cmd/sandpool

# runsc must be static (CGO_ENABLED=0): a dynamic runsc cannot re-exec itself
# inside its chroot. The pin is recorded in bin/runsc.version because such
# builds print VERSION_MISSING.
runsc: $(RUNSC)
$(RUNSC):
	mkdir -p $(CURDIR)/bin
	CGO_ENABLED=0 GOBIN=$(CURDIR)/bin $(GO) install -ldflags='-s -w' gvisor.dev/gvisor/runsc@$(GVISOR_VERSION)
	echo $(GVISOR_VERSION) > $(CURDIR)/bin/runsc.version

# A Debian bookworm minbase with python3 and bash, built once. The placeholder
# in /tmp keeps /tmp inside the root overlay (runsc mounts its own tmpfs over
# an empty /tmp, and files there would escape filesystem snapshots).
rootfs: $(ROOTFS)/.sandpool-rootfs $(ROOTFS)/.sandpool-stdio $(ROOTFS)/.sandpool/agent
$(ROOTFS)/.sandpool-rootfs:
	command -v debootstrap >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap)
	rm -rf $(ROOTFS) $(ROOTFS).tmp
	mkdir -p $(dir $(ROOTFS))
	debootstrap --variant=minbase --include=python3 bookworm $(ROOTFS).tmp $(DEBIAN_MIRROR)
	rm -rf $(ROOTFS).tmp/var/cache/apt/archives/*.deb $(ROOTFS).tmp/var/lib/apt/lists/*
	touch $(ROOTFS).tmp/tmp/.sandpool-keep
	chmod 1777 $(ROOTFS).tmp/tmp
	touch $(ROOTFS).tmp/.sandpool-rootfs
	mv $(ROOTFS).tmp $(ROOTFS)

# Unbuffered python output loses the end of short writes under gVisor; a
# module imported by sitecustomize makes stdout/stderr finish every write
# (see runsc/rootfs/sandpool_stdio.py).
$(ROOTFS)/.sandpool-stdio: runsc/rootfs/sandpool_stdio.py $(ROOTFS)/.sandpool-rootfs
	set -e; for lib in $(ROOTFS)/usr/lib/python3.*; do \
		[ -f "$$lib/os.py" ] || continue; \
		install -m 0644 runsc/rootfs/sandpool_stdio.py "$$lib/sandpool_stdio.py"; \
		link=$$(readlink "$$lib/sitecustomize.py" || true); \
		case "$$link" in \
			/*) site="$(ROOTFS)$$link";; \
			"") site="$$lib/sitecustomize.py";; \
			*) site="$$lib/$$link";; \
		esac; \
		grep -qx 'import sandpool_stdio' "$$site" 2>/dev/null || echo 'import sandpool_stdio' >> "$$site"; \
	done
	touch $@

# sandpool-agent, every sandbox's init and the relay of every execution
# (runsc/agent), static so it runs in any rootfs.
agent: $(AGENT)
$(AGENT): $(shell find cmd/sandpool-agent runsc/agent -name '*.go' -not -name '*_test.go' 2>/dev/null) go.mod go.sum
	mkdir -p $(CURDIR)/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./cmd/sandpool-agent

# /.sandpool/agent is a symlink to agent-<sha256 prefix>, switched by rename.
# Versions are never rewritten nor removed: running sandboxes map their
# init's file, and a restored checkpoint maps it again by its path, so an
# older checkpoint keeps the init it was taken with.
$(ROOTFS)/.sandpool/agent: $(AGENT) $(ROOTFS)/.sandpool-rootfs
	set -e; dir=$(ROOTFS)/.sandpool; v=agent-$$(sha256sum $(AGENT) | cut -c1-12); \
	mkdir -p $$dir; \
	if ! cmp -s $(AGENT) $$dir/$$v; then \
		install -m 0755 $(AGENT) $$dir/$$v.tmp; mv -f $$dir/$$v.tmp $$dir/$$v; \
	fi; \
	touch $$dir/$$v; \
	ln -sfn $$v $@.tmp; mv -Tf $@.tmp $@

deps: runsc rootfs

# Serve on 127.0.0.1:8080 with state, filesystem snapshots and checkpoints under var/
# (git-ignored) and the default config (two warm base sandboxes).
run: deps build
	$(SANDPOOL) serve --config $(CONFIG) --state-dir $(STATE_DIR) --filesystem-snapshot-path $(STATE_DIR)/snapshots --checkpoint-path $(STATE_DIR)/checkpoints $(ARGS)

# Unit tests (fake runtime) and integration tests (real runsc and rootfs,
# which `deps` installs), of the server and of the TypeScript client. CI=true
# turns a missing runsc or rootfs into a failure instead of a skip.
test: test-go test-js

test-go: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 30m ./...

# The TypeScript client (clients/js): type checks, its build, unit tests
# against a fake server, integration tests against bin/sandpool with real
# runsc, and `npm pack` installed into a fresh project.
test-js: deps build js-deps
	cd $(JS) && npm run build && npm run typecheck && npm test

# npm packages exactly as package-lock.json pins them. Debian's nodejs is a
# fallback for a machine without Node.js (the client wants Node 20).
js-deps: $(JS)/node_modules/.package-lock.json
$(JS)/node_modules/.package-lock.json: $(JS)/package.json $(JS)/package-lock.json
	command -v npm >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm)
	cd $(JS) && npm ci --no-audit --no-fund

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; find . -name '*.go' -not -path './build/*' -not -path './clients/*') | sort -u); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(CURDIR)/bin/sandpool $(JS)/dist

# Latency of sandpool against raw runsc, measured in one run; rewrites
# docs/benchmarks.md.
bench: deps
	bash tests/bench.sh
