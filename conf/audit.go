package conf

import (
	"os"
	"path/filepath"
	"strings"
)

// Audit is the [audit] section (access.md, audit-seal.md).
type Audit struct {
	// File is the audit log's path, "-" for standard output, "" for none.
	File string `toml:"file"`
	// FSync fsyncs each line (with those written at the same time) before the answer;
	// otherwise lines are fsynced every second.
	FSync bool `toml:"fsync"`
	// SealKey is the [keys.NAME] that signs the log's checkpoints; "" for none.
	SealKey string `toml:"seal_key"`
	// SealInterval is the longest a line waits for its checkpoint (default 10s).
	SealInterval Duration `toml:"seal_interval"`
	// HeadFile keeps the chain's head across files and restarts (HeadFilePath gives the
	// default).
	HeadFile string `toml:"head_file"`
	// Origin names the log in its checkpoints (OriginName gives the default).
	Origin string `toml:"origin"`
}

func (a *Audit) resolvePaths(c *Config) {
	if a.File != "" && a.File != "-" {
		a.File = c.Path(a.File)
	}
	if a.HeadFile != "" {
		a.HeadFile = c.Path(a.HeadFile)
	}
}

// HeadFilePath is the head file: head_file, else audit.head in stateDir (systemd's
// $STATE_DIRECTORY), else the audit file's path with ".head"; "" for standard output
// without either.
func (a *Audit) HeadFilePath(stateDir string) string {
	switch {
	case a.HeadFile != "":
		return a.HeadFile
	case stateDir != "":
		// $STATE_DIRECTORY may list several folders, separated by colons.
		return filepath.Join(strings.Split(stateDir, ":")[0], "audit.head")
	case a.File != "" && a.File != "-":
		return a.File + ".head"
	}
	return ""
}

// OriginName is origin, else "provenanced HOSTNAME FILE".
func (a *Audit) OriginName() string {
	if a.Origin != "" {
		return a.Origin
	}
	host, _ := os.Hostname()
	return "provenanced " + host + " " + a.File
}

func (c *Config) checkAudit() error {
	a := &c.Audit
	if a.SealKey != "" {
		if a.File == "" {
			return c.Errorf("audit.seal_key", "seals the audit log, but audit.file is not set: set it to the log's path")
		}
		if c.KeyByName(a.SealKey) == nil {
			return c.Errorf("audit.seal_key", "no [keys.%s] in this file; keys: %s", a.SealKey, strings.Join(c.KeyNames(), ", "))
		}
	}
	if a.SealInterval < 0 {
		return c.Errorf("audit.seal_interval", "must be a positive duration such as \"10s\"")
	}
	if strings.ContainsAny(a.Origin, "\r\n") {
		return c.Errorf("audit.origin", "must be one line: it is a line of the signed checkpoint text")
	}
	return nil
}
