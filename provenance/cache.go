package provenance

import "sync"

// boundedCache is a map with a maximum size, safe for concurrent use. When full, an
// arbitrary entry (Go's map iteration order) is evicted: the caches here only save work, so
// precise LRU bookkeeping on every hit is not worth its cost. A size of 0 disables it.
type boundedCache[K comparable, V any] struct {
	mu  sync.RWMutex
	max int
	m   map[K]V
}

func newBoundedCache[K comparable, V any](max int) *boundedCache[K, V] {
	if max < 0 {
		max = 0
	}
	return &boundedCache[K, V]{max: max, m: make(map[K]V)}
}

func (c *boundedCache[K, V]) get(k K) (V, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *boundedCache[K, V]) put(k K, v V) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	if _, exists := c.m[k]; !exists && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
	c.mu.Unlock()
}

func (c *boundedCache[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
