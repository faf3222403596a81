package runsc

import (
	"context"
	"errors"
)

// Checkpoint runs `runsc checkpoint` (not yet implemented).
func (r *Runner) Checkpoint(ctx context.Context, id, imageDir string) ([]byte, error) {
	return nil, errors.New("checkpoint: not implemented")
}

// Restore runs `runsc restore` (not yet implemented).
func (r *Runner) Restore(ctx context.Context, id, imageDir string, spec []byte) error {
	return errors.New("restore: not implemented")
}
