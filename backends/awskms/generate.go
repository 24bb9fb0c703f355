package awskms

import (
	"context"
	"crypto"
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ib1/provenanced/backends"
	"github.com/ib1/provenanced/conf"
)

// Generate creates an ECC_NIST_P256 key for SIGN_VERIFY in KMS, gives it the alias that
// key_id names, and returns its public key.
//
// key_id must be an alias: KMS chooses key ids itself, so an id or ARN in the config can
// only name a key that exists already, and a key created without an alias would be
// known by nothing but an id printed once. An alias that exists already is an error; it
// is never re-pointed, since that would move every signer of the old key to a new one
// that no certificate names.
func Generate(ctx context.Context, spec *conf.Key) (crypto.PublicKey, error) {
	var o Options
	if err := spec.Decode(&o); err != nil {
		return nil, err
	}
	if _, err := checkOptions(spec, &o); err != nil {
		return nil, err
	}
	alias := o.KeyID
	if !strings.HasPrefix(alias, "alias/") || len(alias) == len("alias/") {
		return nil, spec.Errorf("key_id", "%q is not an alias: keygen creates a new key and names it by an alias, so set key_id = \"alias/NAME\" (KMS chooses key ids itself; an id or ARN can only name a key that exists already)", alias)
	}
	if strings.HasPrefix(alias, "alias/aws/") {
		return nil, spec.Errorf("key_id", "%q: aliases under alias/aws/ are reserved for AWS's own keys; choose another name", alias)
	}
	client, t, err := connect(ctx, spec, &o)
	if err != nil {
		return nil, err
	}
	// Look first, so that an alias in use fails before a key is created that nothing
	// would name. (CreateAlias refuses it too, should another keygen win a race.)
	d, err := client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &alias})
	var notFound *types.NotFoundException
	switch {
	case err == nil:
		id := ""
		if d.KeyMetadata != nil && d.KeyMetadata.Arn != nil {
			id = " (it names " + *d.KeyMetadata.Arn + ")"
		}
		return nil, spec.Errorf("key_id", "%s exists already%s; provenanced never re-points an alias or overwrites a key. Choose another alias, or use the existing key as it is", alias, id)
	case !errors.As(err, &notFound):
		return nil, startError(spec, t, "DescribeKey", err, backends.ErrUnavailable)
	}
	created, err := client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecEccNistP256,
		KeyUsage:    types.KeyUsageTypeSignVerify,
		Description: ptr("provenanced signing key (ECDSA P-256), keys." + spec.Name + " of " + spec.File),
	})
	if err != nil {
		return nil, startError(spec, t, "CreateKey", err, backends.ErrUnavailable)
	}
	arn := *created.KeyMetadata.Arn
	if _, err := client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: &arn}); err != nil {
		return nil, spec.Errorf("key_id", "created key %s, but could not name it %s: %s. Delete the key (aws kms schedule-key-deletion --key-id %s) or give it an alias by hand", arn, alias, reason(err), arn)
	}
	out, err := client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &arn})
	if err != nil {
		return nil, startError(spec, t, "GetPublicKey", err, backends.ErrUnavailable)
	}
	pub, err := publicKey(t, out)
	if err != nil {
		return nil, spec.Errorf("key_id", "%v", err)
	}
	return pub, nil
}

func ptr[T any](v T) *T { return &v }
