// Package provenance reads and writes IB1 Trust Framework provenance records.
package provenance
