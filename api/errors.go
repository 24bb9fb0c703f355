package api

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/ib1/provenanced/api/wire"
)

// decodeRequest reads a JSON body into v, rejecting fields not in accepted; on a bad
// request it answers and reports false.
func (a *API) decodeRequest(w http.ResponseWriter, r *http.Request, v any, accepted string) bool {
	body, err := wire.ReadJSON(w, r, a.opts.MaxRequestBytes)
	if err == nil {
		err = wire.DecodeStrict(body, v, accepted)
	}
	if err != nil {
		a.writeRequestError(w, r, err)
		return false
	}
	return true
}

// writeRequestError answers a wire.RequestError, or a 500 for anything else.
func (a *API) writeRequestError(w http.ResponseWriter, r *http.Request, err error) {
	var re *wire.RequestError
	if errors.As(err, &re) {
		wire.Error(w, re.Status, re.Code, re.Msg, "")
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("route", r.Pattern), slog.String("error", err.Error()))
	wire.Error(w, http.StatusInternalServerError, "internal", "internal error; see the daemon's log", "")
}
