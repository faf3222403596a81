package main

import (
	"context"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sandpool/sandpool/pool"
)

// reconfigurer is what a reload changes; *pool.Pool is the real one.
type reconfigurer interface {
	Reconfigure(ctx context.Context, limits pool.Limits) error
}

// reloadable are the config keys SIGHUP applies; the others need a restart.
var reloadable = map[string]bool{"max_sandboxes": true, "create_concurrency": true, "auto_warm": true, "pools": true}

// reloadOnSignal re-reads the config on every signal until ctx ends.
func reloadOnSignal(ctx context.Context, signals <-chan os.Signal, running Config, load func() (Config, error), p reconfigurer, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-signals:
			running = reload(ctx, running, load, p, log)
		}
	}
}

// reload loads the config and applies its pool settings. An invalid config
// changes nothing: the error is logged and the running config is returned.
func reload(ctx context.Context, running Config, load func() (Config, error), p reconfigurer, log zerolog.Logger) Config {
	next, err := load()
	if err != nil {
		log.Error().Err(err).Msg("config reload rejected; the running config stays")
		return running
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Reconfigure(rctx, next.limits()); err != nil {
		log.Error().Err(err).Msg("config reload rejected; the running config stays")
		return running
	}
	if keys := restartOnly(running, next); len(keys) > 0 {
		log.Warn().Strs("keys", keys).Msg("config reload: these keys only change on restart; ignored")
	}
	applied := running
	applied.MaxSandboxes, applied.CreateConcurrency, applied.AutoWarm, applied.Pools = next.MaxSandboxes, next.CreateConcurrency, next.AutoWarm, next.Pools
	pools := make([]string, len(next.Pools))
	for i, pc := range next.Pools {
		pools[i] = pool.PoolConfig{Snapshot: pc.Snapshot}.Label() + "=" + strconv.Itoa(pc.Warm)
	}
	log.Info().Int("max_sandboxes", next.MaxSandboxes).Int("create_concurrency", next.CreateConcurrency).
		Int("auto_warm", next.AutoWarm).Strs("pools", pools).Msg("config reloaded")
	return applied
}

// restartOnly names the keys that differ between a and b and that a reload
// cannot apply.
func restartOnly(a, b Config) []string {
	var keys []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := 0; i < va.NumField(); i++ {
		key, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		if reloadable[key] || reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		keys = append(keys, key)
	}
	return keys
}
