package runsc

import "errors"

// cleanupStack undoes a partial creation in reverse order.
type cleanupStack struct{ fns []func() error }

func (s *cleanupStack) push(fn func() error) { s.fns = append(s.fns, fn) }

// release forgets every step: the creation succeeded.
func (s *cleanupStack) release() { s.fns = nil }

// run undoes every step, newest first, and joins their errors.
func (s *cleanupStack) run() error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		errs = append(errs, s.fns[i]())
	}
	s.fns = nil
	return errors.Join(errs...)
}
