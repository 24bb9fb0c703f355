package provenance

import (
	"errors"
	"fmt"
)

// ErrNoStep is returned (wrapped) by Find when no step contains the required value.
var ErrNoStep = errors.New("provenance: no step matches")

// ErrManySteps is returned (wrapped) by Find when more than one step contains it.
var ErrManySteps = errors.New("provenance: more than one step matches")

// Contains reports whether have contains required, recursively: an object contains another
// when it has every key of it with a value that contains the required value; a list contains
// another when every required item is contained by some item of it; anything else must be
// equal (numbers by exact value, booleans only equal booleans). required may use *Object,
// map[string]any, []any, []string, string, json.Number, Go integers and floats, bool, nil.
func Contains(have, required any) bool {
	if rm := asMembers(required); rm != nil {
		hm := asMembers(have)
		if hm == nil {
			return false
		}
		for _, r := range rm {
			found := false
			for _, h := range hm {
				if h.Key == r.Key {
					found = Contains(h.Value, r.Value)
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	if rl := asList(required); rl != nil {
		hl := asList(have)
		if hl == nil {
			return false
		}
		for _, r := range rl {
			found := false
			for _, h := range hl {
				if Contains(h, r) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	return JSONEqual(have, required)
}

// Filter returns the decoded steps that contain required (see Contains), in order.
func Filter(steps []*Object, required any) []*Object {
	var out []*Object
	for _, s := range steps {
		if Contains(s, required) {
			out = append(out, s)
		}
	}
	return out
}

// Find returns the one decoded step that contains required (see Contains). None, or more
// than one, is an error wrapping ErrNoStep or ErrManySteps.
func Find(steps []*Object, required any) (*Object, error) {
	found := Filter(steps, required)
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, ErrNoStep
	default:
		return nil, fmt.Errorf("%w (%d steps)", ErrManySteps, len(found))
	}
}
