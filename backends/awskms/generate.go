package awskms

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

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
// that no certificate names. Should a step after CreateKey fail, what keygen made is
// undone (the alias deleted, the key scheduled for deletion), or the error names what is
// left and how to remove it.
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
	g := &generated{client: client, arn: *created.KeyMetadata.Arn, id: *created.KeyMetadata.KeyId}
	if _, err := client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: &g.arn}); err != nil {
		return nil, g.undo(ctx, startError(spec, t, "CreateAlias", err, backends.ErrUnavailable))
	}
	g.alias = alias
	out, err := client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &g.arn})
	if err != nil {
		return nil, g.undo(ctx, startError(spec, t, "GetPublicKey", err, backends.ErrUnavailable))
	}
	pub, err := publicKey(t, out)
	if err != nil {
		return nil, g.undo(ctx, spec.Errorf("key_id", "%v", err))
	}
	return pub, nil
}

// generated is what keygen has made so far, to be undone should a later step fail: a key
// that nothing names, or one whose alias names a key the daemon cannot use, would be left
// behind unseen (and a KMS key costs money each month until it is deleted).
type generated struct {
	client interface {
		DeleteAlias(context.Context, *kms.DeleteAliasInput, ...func(*kms.Options)) (*kms.DeleteAliasOutput, error)
		ScheduleKeyDeletion(context.Context, *kms.ScheduleKeyDeletionInput, ...func(*kms.Options)) (*kms.ScheduleKeyDeletionOutput, error)
	}
	arn, alias string
	// id is the key's id, which undo schedules for deletion by: KMS takes the ARN as
	// well, but moto (5.2.1) finds a key to schedule by its id alone.
	id string
}

// undo deletes the alias and schedules the key's deletion (after 7 days, KMS's shortest
// wait), and returns err saying so, or naming what is left and how to remove it. It runs
// even when ctx is over, with a deadline of its own: keygen's running out of time is one
// of the failures it undoes.
func (g *generated) undo(ctx context.Context, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var left []string
	if g.alias != "" {
		if _, derr := g.client.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: &g.alias}); derr != nil {
			left = append(left, fmt.Sprintf("the alias %s (aws kms delete-alias --alias-name %s; DeleteAlias: %s)", g.alias, g.alias, reason(derr)))
		}
	}
	_, derr := g.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &g.id, PendingWindowInDays: ptr(int32(7))})
	if derr != nil {
		left = append(left, fmt.Sprintf("the key %s (aws kms schedule-key-deletion --key-id %s --pending-window-in-days 7; ScheduleKeyDeletion: %s)", g.arn, g.arn, reason(derr)))
	}
	if len(left) > 0 {
		return fmt.Errorf("%w; keygen could not undo what it created, and left behind %s", err, strings.Join(left, " and "))
	}
	undone := "keygen scheduled the key it created, " + g.arn + ", for deletion in 7 days (aws kms cancel-key-deletion keeps it)"
	if g.alias != "" {
		undone = "keygen deleted the alias it created and scheduled its key, " + g.arn + ", for deletion in 7 days (aws kms cancel-key-deletion keeps it)"
	}
	return fmt.Errorf("%w; %s", err, undone)
}

func ptr[T any](v T) *T { return &v }
