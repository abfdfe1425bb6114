package main

// A type-aware PropertyCollector traversal.
//
// vSphere API reference, vmodl.query.PropertyCollector.TraversalSpec:
// "type: Name of the object type containing the property"; a TraversalSpec
// applies only to objects of that type (or a subtype), and a traversal that
// reaches an object already visited does not loop.  govmomi 0.24.2's
// retrieveResult.selectSet follows ts.Path on every object whatever its
// type and keeps no visited set, so oslo.vmware's recursive traversal
// (vim_util.build_recursive_traversal_spec: rp_to_rp and rp_to_vm applied to
// a VirtualMachine's resourcePool, and back) never ends.
//
// The fix wraps the simulator's own PropertyCollector: it expands every
// ObjectSpec's selectSet here, by type and with a visited set, into a flat
// ObjectSet, then lets the simulator collect the properties as usual.

import (
	"path"
	"reflect"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type propertyCollector struct {
	simulator.PropertyCollector
}

// RetrievePropertiesEx is the simulator's, over the expanded object set.
func (pc *propertyCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	req := *r
	req.SpecSet = expandSpecs(ctx, r.SpecSet)
	return pc.PropertyCollector.RetrievePropertiesEx(ctx, &req)
}

// RetrieveProperties is the simulator's, over the expanded object set.
func (pc *propertyCollector) RetrieveProperties(ctx *simulator.Context, r *types.RetrieveProperties) soap.HasFault {
	req := *r
	req.SpecSet = expandSpecs(ctx, r.SpecSet)
	return pc.PropertyCollector.RetrieveProperties(ctx, &req)
}

func expandSpecs(ctx *simulator.Context, specs []types.PropertyFilterSpec) []types.PropertyFilterSpec {
	out := make([]types.PropertyFilterSpec, 0, len(specs))
	for _, spec := range specs {
		flat := spec
		flat.ObjectSet = nil
		seen := map[types.ManagedObjectReference]bool{}
		add := func(ref types.ManagedObjectReference) {
			if !seen[ref] {
				seen[ref] = true
				flat.ObjectSet = append(flat.ObjectSet, types.ObjectSpec{Obj: ref})
			}
		}
		for _, o := range spec.ObjectSet {
			if len(o.SelectSet) == 0 {
				add(o.Obj)
				continue
			}
			if o.Skip == nil || !*o.Skip {
				add(o.Obj)
			}
			w := walker{ctx: ctx, specs: map[string]*types.TraversalSpec{}, visited: map[string]bool{}, add: add}
			w.walk(o.Obj, o.SelectSet)
		}
		out = append(out, flat)
	}
	return out
}

type walker struct {
	ctx     *simulator.Context
	specs   map[string]*types.TraversalSpec
	visited map[string]bool
	add     func(types.ManagedObjectReference)
}

func (w *walker) walk(ref types.ManagedObjectReference, set []types.BaseSelectionSpec) {
	// The same object is walked once per distinct selection set.
	key := ref.Type + ":" + ref.Value
	for _, ss := range set {
		key += "|" + ss.GetSelectionSpec().Name
		if ts, ok := ss.(*types.TraversalSpec); ok {
			key += "/" + ts.Type + "." + ts.Path
		}
	}
	if w.visited[key] {
		return
	}
	w.visited[key] = true
	obj, ok := managedObject(w.ctx, ref)
	if !ok {
		return
	}
	for _, ss := range set {
		if ts, ok := ss.(*types.TraversalSpec); ok && ts.Name != "" {
			w.specs[ts.Name] = ts
		}
	}
	for _, ss := range set {
		ts, ok := ss.(*types.TraversalSpec)
		if !ok {
			ts = w.specs[ss.GetSelectionSpec().Name]
			if ts == nil {
				continue
			}
		}
		if !isA(obj.Type(), ts.Type) {
			continue
		}
		for _, next := range refsAt(obj, ts.Path) {
			if ts.Skip == nil || !*ts.Skip {
				w.add(next)
			}
			w.walk(next, ts.SelectSet)
		}
	}
}

// managedObject digs the vim25/mo struct out of a registry object
// (simulator types embed their mo type as the first field).
func managedObject(ctx *simulator.Context, ref types.ManagedObjectReference) (reflect.Value, bool) {
	var obj interface{}
	if ctx.Session != nil {
		obj = ctx.Session.Get(ref)
	} else {
		obj = simulator.Map.Get(ref)
	}
	if obj == nil {
		return reflect.Value{}, false
	}
	v := reflect.ValueOf(obj)
	for v.Kind() == reflect.Ptr {
		v = v.Elem()
	}
	for path.Base(v.Type().PkgPath()) != "mo" {
		if v.Kind() != reflect.Struct || v.NumField() == 0 {
			return reflect.Value{}, false
		}
		v = v.Field(0)
		for v.Kind() == reflect.Ptr {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
	}
	return v, true
}

// isA: the mo type is name, or embeds it (ClusterComputeResource is a
// ComputeResource, VirtualApp a ResourcePool).
func isA(t reflect.Type, name string) bool {
	if t.Name() == name {
		return true
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && path.Base(f.Type.PkgPath()) == "mo" && isA(f.Type, name) {
			return true
		}
	}
	return false
}

// refsAt returns the managed object references held by property p.
func refsAt(v reflect.Value, p string) []types.ManagedObjectReference {
	f, ok := fieldByTag(v, p)
	if !ok {
		return nil
	}
	switch x := f.Interface().(type) {
	case types.ManagedObjectReference:
		return []types.ManagedObjectReference{x}
	case *types.ManagedObjectReference:
		if x != nil {
			return []types.ManagedObjectReference{*x}
		}
	case []types.ManagedObjectReference:
		return x
	}
	return nil
}

func fieldByTag(v reflect.Value, tag string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("mo") == tag {
			return v.Field(i), true
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if r, ok := fieldByTag(v.Field(i), tag); ok {
				return r, true
			}
		}
	}
	return reflect.Value{}, false
}
