package directory

import (
	"reflect"
	"testing"
)

// Stores hand out and keep copies made by cloneAgency; a slice field it does
// not copy would let callers change the store's state. This catches a slice
// added to Agency later and forgotten there.
func TestCloneAgencyCopiesEverySlice(t *testing.T) {
	var a Agency
	v := reflect.ValueOf(&a).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Slice {
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		}
	}
	c := reflect.ValueOf(cloneAgency(a))
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Slice && c.Field(i).Pointer() == f.Pointer() {
			t.Errorf("cloneAgency shares Agency.%s: copy it there", v.Type().Field(i).Name)
		}
	}
}
