package daemon

// Keys in AWS KMS (backend = "awskms").
import _ "github.com/ib1/provenanced/backends/awskms"
