// Package pkcs11 is the backend for keys that never leave an HSM: an EC P-256 private key
// on a PKCS#11 token, used through the vendor's PKCS#11 library (SoftHSM2 for tests).
//
// # Configuration
//
//	[keys.signing]
//	backend = "pkcs11"
//	module = "/usr/lib/softhsm/libsofthsm2.so" # the vendor's PKCS#11 library
//	token_label = "provenance"                 # and/or token_serial = "8f4e1f2a0d3c7b6e"
//	key_label = "signing"                      # and/or key_id = "01" (CKA_ID in hex)
//	pin = "file:/etc/provenanced/hsm.pin"      # or "env:HSM_PIN"
//	max_sessions = 8                           # sessions this key may open, at least 2
//	ready_check_interval = "5s"                # a test signature when idle this long
//	state_dir = "/var/lib/provenanced"         # where refused PINs are remembered
//	certificates = "signing-bundle.pem"
//
// module is the path of the library (relative to the config file); it comes from the
// config only, never from a request. The token is chosen by label, serial or both, and
// must be the only one that matches. The key is the one private key (CKO_PRIVATE_KEY)
// with that CKA_LABEL and/or CKA_ID; it must be EC on P-256 and allowed to sign, and its
// public key is read from the public key object with the same CKA_ID (or, failing that,
// from the private key's CKA_PUBLIC_KEY_INFO). Each of these is checked at start, and a
// failure is a config error that names the field at fault: exit status 2.
//
// The PIN comes from an environment variable ("env:NAME") or a file ("file:PATH",
// relative to the config file, not open to all users, a trailing newline ignored). A PIN
// written into the config is refused. The PIN never appears in an error, a log line, a
// metric or the command line. Without pin the token is used without a login, which works
// only for tokens that do not require one.
//
// The same key may be given as an RFC 7512 URI instead of those fields:
//
//	uri = "pkcs11:token=provenance;object=signing;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/provenanced/hsm.pin"
//
// Path attributes: token, serial, manufacturer, model (select the token), object (the key's
// label), id (its CKA_ID, percent-encoded bytes such as %01%a2), type (private, if given).
// Query attributes: module-path, and pin-source (file:PATH, file:///PATH, an absolute path,
// or env:NAME, an extension of this daemon). pin-value is refused like a PIN in the config,
// and slot-id because SoftHSM renumbers slots; any other attribute is an error rather than
// ignored, since a key chosen by an attribute that was dropped would be the wrong key.
// With uri, only max_sessions, ready_check_interval and state_dir may be set beside it.
//
// # Sessions and login
//
// A PKCS#11 session runs one operation at a time. Each key holds one "anchor" session,
// logged in once at start; a login belongs to the token and the application, not to one
// session, so every other session the key opens can sign. The signing sessions are a pool
// of max_sessions-1, opened as the load needs them and kept; a signature borrows one for
// C_SignInit and C_Sign, and waits for one no longer than its request's context allows,
// so a slow or hung token gives 503 at the request's deadline rather than piling up
// requests. Keep max_sessions below the token's session limit (less any other program's
// sessions). More sessions are not always faster: SoftHSM signs on the caller's thread and
// gains little beyond the number of cores.
//
// A token that refuses a session below max_sessions (CKR_SESSION_COUNT) has not gone
// away: the signature waits for one of the key's open sessions, or, when the key has none,
// signs on the anchor. How long signatures wait for a session is reported through
// backends.SessionWaiter (provenanced_pkcs11_session_wait_seconds). A TPM runs one
// command at a time: 2 or 3 sessions suit it, more only lengthen its queue.
//
// Keys on one token share its login: the second key's C_Login answers
// CKR_USER_ALREADY_LOGGED_IN, and its PIN is not checked by the token.
//
// # Signatures
//
// CKM_ECDSA signs whatever it is given and returns r||s. The backend signs 32-byte digests
// only (SoftHSM would quietly sign the first 32 bytes of a longer input), honours the hash
// of crypto.SignerOpts (SHA-256 only), and returns ASN.1 DER, as Go, OpenSSL and IB1
// records expect.
//
// # Faults and recovery
//
// A PIN the token rejects is offered once and never again: tokens lock their PIN after a
// few wrong ones, and a daemon that retried on its own would lock it. At start that is a
// config error; later (a token initialised again with another PIN) the key stays
// unavailable until the PIN source yields another PIN (a PIN file is read at each
// attempt) or the daemon restarts. A token whose flags say its PIN is locked, that one
// more wrong PIN will lock it, or that a wrong PIN was given since the last good login
// (CKF_USER_PIN_COUNT_LOW, which SoftHSM sets too) is not offered the PIN at all: a
// service manager that restarts the daemon after a wrong PIN cannot lock the token one
// restart at a time. A good login by hand clears the count. Under systemd, set
// RestartPreventExitStatus=2 so that a config error does not become a restart loop.
//
// tpm2-pkcs11 never sets CKF_USER_PIN_COUNT_LOW, and a TPM counts wrong PINs towards its
// dictionary-attack lockout, which locks every key on it and its SO PIN (3 tries on
// swtpm's defaults). So a refused PIN is also remembered, per token, as a salted PBKDF2
// hash in a 0600 file in state_dir (default $STATE_DIRECTORY), and not offered again after
// a restart either; a good login removes the record. A TPM's lockout ends with its
// recovery time or tpm2_dictionarylockout --clear-lockout, and the key comes back by
// itself.
//
// While running, an error that means the session, the key's handle or the token is gone
// (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// CKR_OBJECT_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, CKR_GENERAL_ERROR, ...) takes the key
// down: the request that saw it reconnects once (finds the token and the key again,
// logs in, and checks with a test signature that the key is the one it started with) and
// tries again. If the token cannot be reached, requests fail at once with
// backends.ErrUnavailable (HTTP 503, provenanced_backend_up 0, /readyz 503), and the key
// tries again at most once a second, driven by requests and by the readiness check, so it
// comes back by itself, without a restart, when the token does.
//
// Ready answers from the key's state and never calls the module. The state is kept fresh
// by a readiness check: a key that has not signed for ready_check_interval makes a test
// signature (at most one in flight, bounded by the interval, at most 5 s), since token and
// session information may come from the library's cache (tpm2-pkcs11's does) and only a
// signature reaches the device. A PKCS#11 call cannot be interrupted, so each signature
// runs in a goroutine of its own and its caller waits no longer than its context allows:
// at the deadline the request gets backends.ErrUnavailable, and a call still inside the
// module marks the key degraded (not ready, new signatures refused at once) until it
// returns. A key that comes
// back under the configured name with another public key is not used: that needs a
// restart and a certificate for the new key.
//
// SoftHSM (like HSM clients that lose their connection) sees a token that went away and
// came back only after C_Finalize and C_Initialize. When a token or key cannot be found,
// the backend re-initialises the library, which costs every other key of the same
// library its sessions and login (they reconnect on their next use); while other keys of
// the library can sign, it does so at most every 5 s, backing off to 5 minutes.
//
// Generate (provenanced keygen) creates the key pair with C_GenerateKeyPair: a token key,
// sensitive, never extractable, allowed to sign only, with the configured label and id (a
// random 8-byte CKA_ID when only a label is given). The public key's template names only
// the curve, the id and the label: tpm2-pkcs11 refuses CKA_VERIFY or CKA_ENCRYPT there. A
// token that holds any object with that label or id already is an error; a key is never
// overwritten. A token without EC mechanisms (CKR_MECHANISM_INVALID) is said to be unable
// to make or use P-256 keys.
//
// The backend calls miekg/pkcs11 directly rather than crypto11: crypto11's session pool
// waits without a deadline unless configured to, it cannot be told to find a key again
// after a session or handle error nor to re-initialise the library, and its Sign ignores
// the hash in its options and does not check the digest's length.
package pkcs11
