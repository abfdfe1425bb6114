package main

// A JSON control endpoint for tests, outside the vSphere API:
//
//	POST /lmcaps-sim/relocation {"vm": "vm-61", "duration": 2.5, "cancelable": true,
//	                             "cancel_delay": 0, "complete_on_cancel": false}
//	     parameters of that VM's next RelocateVM_Task (seconds; duration 0 = never ends)
//	POST /lmcaps-sim/fail {"task": "task-70"}   the running relocation fails now
//	POST /lmcaps-sim/cancelable {"task": "task-70", "cancelable": false}
//	     the running relocation's TaskInfo.cancelable from now on
//	GET  /lmcaps-sim/vm?ref=vm-61               {"host", "host_name", "power_state"} from the model
//	GET  /lmcaps-sim/task?ref=task-70           {"state", "progress", "cancelled", "cancelable", "cancel_calls"}
//	GET  /lmcaps-sim/inventory                  VMs, hosts (ref, name, host / pool, datastore), relocate task refs

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func reply(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func ref(kind, value string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: kind, Value: value}
}

func vmMO(value string) *mo.VirtualMachine {
	if vm, ok := simulator.Map.Get(ref("VirtualMachine", value)).(*migratingVM); ok {
		return &vm.VirtualMachine.VirtualMachine
	}
	return nil
}

func (x *extension) serveControl(mux *http.ServeMux) {
	mux.HandleFunc("/lmcaps-sim/relocation", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			VM               string  `json:"vm"`
			Duration         float64 `json:"duration"`
			Cancelable       *bool   `json:"cancelable"`
			CancelDelay      float64 `json:"cancel_delay"`
			CompleteOnCancel bool    `json:"complete_on_cancel"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || vmMO(in.VM) == nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "want {vm: <VirtualMachine moref>, ...}"})
			return
		}
		p := relocation{Duration: time.Duration(in.Duration * float64(time.Second)), Cancelable: x.defaults.Cancelable,
			CancelDelay: time.Duration(in.CancelDelay * float64(time.Second)), CompleteOnCancel: in.CompleteOnCancel}
		if in.Cancelable != nil {
			p.Cancelable = *in.Cancelable
		}
		x.mu.Lock()
		x.next[in.VM] = p
		x.mu.Unlock()
		reply(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/lmcaps-sim/fail", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Task string `json:"task"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		t := x.task(in.Task)
		if t == nil {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such relocate task"})
			return
		}
		simulator.Map.WithLock(t, func() {
			if t.failWith == nil {
				t.failWith = &types.MigrationFault{}
			}
		})
		reply(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/lmcaps-sim/cancelable", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Task       string `json:"task"`
			Cancelable bool   `json:"cancelable"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		t := x.task(in.Task)
		if t == nil {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such relocate task"})
			return
		}
		simulator.Map.WithLock(t, func() {
			if !t.finished {
				t.p.Cancelable = in.Cancelable
				simulator.Map.Update(t, []types.PropertyChange{{Name: "info.cancelable", Val: in.Cancelable}})
			}
		})
		reply(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/lmcaps-sim/vm", func(w http.ResponseWriter, r *http.Request) {
		vm := vmMO(r.URL.Query().Get("ref"))
		if vm == nil {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such VirtualMachine"})
			return
		}
		out := map[string]string{}
		simulator.Map.WithLock(vm.Self, func() {
			out["power_state"] = string(vm.Runtime.PowerState)
			if vm.Runtime.Host != nil {
				out["host"] = vm.Runtime.Host.Value
				if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
					out["host_name"] = h.Name
				}
			}
		})
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("/lmcaps-sim/task", func(w http.ResponseWriter, r *http.Request) {
		t := x.task(r.URL.Query().Get("ref"))
		if t == nil {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such relocate task"})
			return
		}
		out := map[string]interface{}{}
		simulator.Map.WithLock(t, func() {
			out["state"] = t.Info.State
			out["progress"] = t.Info.Progress
			out["cancelled"] = t.Info.Cancelled
			out["cancelable"] = t.Info.Cancelable
			out["cancel_calls"] = t.cancelCalls
		})
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("/lmcaps-sim/inventory", func(w http.ResponseWriter, r *http.Request) {
		type item struct {
			Ref       string `json:"ref"`
			Name      string `json:"name"`
			Host      string `json:"host,omitempty"`
			Pool      string `json:"pool,omitempty"`
			Datastore string `json:"datastore,omitempty"`
		}
		var vms, hosts []item
		for _, e := range simulator.Map.All("VirtualMachine") {
			if vm, ok := e.(*migratingVM); ok {
				simulator.Map.WithLock(vm.Self, func() {
					it := item{Ref: vm.Self.Value, Name: vm.Name}
					if vm.Runtime.Host != nil {
						it.Host = vm.Runtime.Host.Value
					}
					if vm.ResourcePool != nil {
						it.Pool = vm.ResourcePool.Value
					}
					vms = append(vms, it)
				})
			}
		}
		for _, e := range simulator.Map.All("HostSystem") {
			h := e.(*simulator.HostSystem)
			it := item{Ref: h.Self.Value, Name: h.Name}
			if len(h.Datastore) > 0 {
				it.Datastore = h.Datastore[0].Value
			}
			hosts = append(hosts, it)
		}
		x.mu.Lock()
		tasks := []string{}
		for ref := range x.tasks {
			tasks = append(tasks, ref)
		}
		x.mu.Unlock()
		reply(w, http.StatusOK, map[string]interface{}{"vms": vms, "hosts": hosts, "relocate_tasks": tasks})
	})
}
